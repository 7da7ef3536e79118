"""TorchServe's config.properties for camserve: reading, rendering into a run directory, and the ports it binds.

deploy/config.properties is the deliberate configuration; :func:`render_config` writes it into a server's run
directory with an absolute model store, optional bind address and port overrides. :class:`Endpoints` says where
the rendered configuration listens; :func:`free_port_overrides` gives tests and benchmarks their own ports.
"""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "config.properties"

# The five listening sockets and the config keys that hold them.
HTTP_KEYS = ("inference_address", "management_address", "metrics_address")
GRPC_PORT_KEYS = ("grpc_inference_port", "grpc_management_port")
GRPC_ADDRESS_KEYS = ("grpc_inference_address", "grpc_management_address")


class ServerError(RuntimeError):
    """The server could not be started, did not become ready, or could not be reached."""


def read_properties(path: Path) -> dict[str, str]:
    """Reads the subset of Java .properties syntax TorchServe's configs use: ``key=value`` lines, ``#`` comments.

    Values are returned as written (escapes such as ``\\\\.`` kept), so a rendered file round-trips them.
    """
    props: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ServerError(f"{path}: not a key=value line: {raw!r}")
        props[key.strip()] = value.strip()
    return props


def _escape_regex_for_properties(text: str) -> str:
    """Escapes regex metacharacters of a literal path, doubled for the .properties reader."""
    out = []
    for ch in text:
        if ch in r".^$*+?()[]{}|\\":
            out.append("\\\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def render_config(
    dest: Path,
    *,
    model_store: Path,
    template: Path = TEMPLATE,
    bind: str | None = None,
    overrides: Mapping[str, str | int] | None = None,
) -> dict[str, str]:
    """Writes the server's config.properties to ``dest`` and returns its key/value pairs.

    Args:
        dest: The file to write (inside the run directory).
        model_store: Folder holding the .mar archives; becomes ``model_store`` and the only ``allowed_urls``.
        template: The deliberate settings (deploy/config.properties).
        bind: If given, the host every listener binds to (e.g. ``0.0.0.0`` in a container).
        overrides: Any keys to set last, e.g. ports (``grpc_inference_port=17070``) or
            ``inference_address=http://127.0.0.1:18080``.
    """
    props = read_properties(template)
    store = model_store.resolve()
    props["model_store"] = str(store)
    props["allowed_urls"] = f"file://{_escape_regex_for_properties(str(store))}/[^/]+\\\\.mar"
    if bind is not None:
        for key in HTTP_KEYS:
            parsed = urllib.parse.urlsplit(props[key])
            props[key] = f"{parsed.scheme}://{bind}:{parsed.port}"
        for key in GRPC_ADDRESS_KEYS:
            props[key] = bind
    for key, value in (overrides or {}).items():
        props[key] = str(value)
    header = f"# Rendered by deploy/serverctl.py from {template}. Edit the template, not this file.\n"
    dest.write_text(header + "".join(f"{k}={v}\n" for k, v in props.items()), encoding="utf-8")
    return props


@dataclass(frozen=True)
class Endpoints:
    """Where a server listens. HTTP endpoints are base URLs; gRPC endpoints are ``host:port`` targets."""

    rest: str
    management: str
    metrics: str
    grpc: str
    grpc_management: str

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> Endpoints:
        """Reads the five listeners from a rendered configuration (TorchServe's defaults where absent)."""

        def connectable(host: str) -> str:
            # A server bound to every interface is reached over loopback from this machine.
            return "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host

        def http(key: str, default: str) -> str:
            parsed = urllib.parse.urlsplit(props.get(key, default))
            return f"{parsed.scheme}://{connectable(parsed.hostname or '127.0.0.1')}:{parsed.port}"

        def grpc(port_key: str, address_key: str, default_port: int) -> str:
            host = connectable(props.get(address_key, "127.0.0.1"))
            return f"{host}:{int(props.get(port_key, default_port))}"

        return cls(
            rest=http("inference_address", "http://127.0.0.1:8080"),
            management=http("management_address", "http://127.0.0.1:8081"),
            metrics=http("metrics_address", "http://127.0.0.1:8082"),
            grpc=grpc("grpc_inference_port", "grpc_inference_address", 7070),
            grpc_management=grpc("grpc_management_port", "grpc_management_address", 7071),
        )


def _listeners(props: Mapping[str, str]) -> list[tuple[str, str, int]]:
    """(config key, host, port) of the five sockets the server will bind."""
    out = []
    for key in HTTP_KEYS:
        if key in props:
            parsed = urllib.parse.urlsplit(props[key])
            out.append((key, parsed.hostname or "127.0.0.1", int(parsed.port or 0)))
    for port_key, address_key in zip(GRPC_PORT_KEYS, GRPC_ADDRESS_KEYS, strict=True):
        if port_key in props:
            out.append((port_key, props.get(address_key, "127.0.0.1"), int(props[port_key])))
    return out


def check_ports_free(props: Mapping[str, str]) -> None:
    """Fails with the key to change when a port the server needs is taken (TorchServe's own error is vaguer)."""
    for key, host, port in _listeners(props):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR: a port whose old connections linger in TIME_WAIT is free (a live listener still is not).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise ServerError(
                    f"{host}:{port} ({key}) is not available: {exc.strerror}. Is a server already running "
                    f"(deploy/stop.sh)? Or choose another port: --set {key}=..."
                ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` right now (used by tests to give each server its own ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port_overrides(host: str = "127.0.0.1") -> dict[str, str]:
    """Overrides binding all five listeners to distinct free ports on ``host``.

    The gRPC management port is the inference port + 1, TorchServe's convention (7070/7071) that clients use to
    find it.
    """
    for _ in range(100):
        grpc_port = free_port(host)
        if grpc_port < 65535 and _port_free(host, grpc_port + 1):
            break
    else:
        raise ServerError(f"no two consecutive free ports on {host}")
    http: set[int] = set()
    while len(http) < 3:
        port = free_port(host)
        if port not in (grpc_port, grpc_port + 1):
            http.add(port)
    rest, management, metrics = sorted(http)
    return {
        "inference_address": f"http://{host}:{rest}",
        "management_address": f"http://{host}:{management}",
        "metrics_address": f"http://{host}:{metrics}",
        "grpc_inference_port": str(grpc_port),
        "grpc_management_port": str(grpc_port + 1),
        "grpc_inference_address": host,
        "grpc_management_address": host,
    }
