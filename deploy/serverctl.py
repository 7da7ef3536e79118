"""Starts, waits for and stops a camserve TorchServe: the one place that knows how to run the server.

Used by deploy/start.sh, deploy/stop.sh, the container entry point and the test fixture (tests/conftest.py), so
tests exercise the same configuration and readiness rule as a user's server.

    python -m deploy.serverctl start  [--run-dir .run] [--model-store model_store/archives] [--models NAME ...]
                                      [--bind ADDR] [--set key=value ...] [--timeout 300]
    python -m deploy.serverctl run    (same options; stays in the foreground, for containers)
    python -m deploy.serverctl status [--run-dir .run]     exit 0 when every model has its workers READY
    python -m deploy.serverctl stop   [--run-dir .run] [--timeout 30]

What it does, and why:
- Each server gets its own run directory, used as TorchServe's working directory (``logs/``, ``key_file.json``)
  and as its TMPDIR (extracted archives, worker sockets and the launcher's pid file, which TorchServe otherwise
  keeps in the shared /tmp so two servers on one machine would refuse to start).
- deploy/config.properties is rendered into the run directory with absolute ``model_store`` / ``allowed_urls``
  and optional bind address / port overrides, so tests run the very limits the deployment uses.
- The ``torchserve --foreground`` launcher runs in a new session; its process group holds the Java frontend and
  the Python workers, so stopping signals the group (TERM, then KILL after a timeout) and leaves nothing behind.
- Ready means: every requested model reports at least ``max(minWorkers, 1)`` workers READY on the management
  API, and gRPC ``Ping`` answers (TorchServe's Ping alone says "Healthy" before workers have loaded).
  A model whose worker fails to load twice stops the wait at once with the worker's error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "deploy" / "config.properties"
DEFAULT_RUN_DIR = ROOT / ".run"
DEFAULT_MODEL_STORE = ROOT / "model_store" / "archives"
TORCHSERVE = Path(sys.executable).with_name("torchserve")

PID_FILE = "torchserve.pid"
MODELS_FILE = "models.txt"
CONSOLE_LOG = "torchserve.out"
CONFIG_FILE = "config.properties"
KEY_FILE = "key_file.json"

# The five listening sockets and the config keys that hold them.
HTTP_KEYS = ("inference_address", "management_address", "metrics_address")
GRPC_PORT_KEYS = ("grpc_inference_port", "grpc_management_port")
GRPC_ADDRESS_KEYS = ("grpc_inference_address", "grpc_management_address")


class ServerError(RuntimeError):
    """The server could not be started, did not become ready, or could not be reached."""


# --------------------------------------------------------------------------------------------- configuration


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


# ------------------------------------------------------------------------------------------------ the server


@dataclass(frozen=True)
class Keys:
    """The three keys TorchServe writes to key_file.json (new ones on every start)."""

    inference: str
    management: str
    api: str

    @classmethod
    def read(cls, path: Path) -> Keys:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(data["inference"]["key"], data["management"]["key"], data["API"]["key"])


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text[-lines:])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A reaped-by-nobody zombie still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_group(pid: int, *, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Stops the launcher ``pid`` and its process group: TERM, wait up to ``timeout`` s, then KILL.

    Returns True when the group stopped on TERM, False when it had to be killed.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            process.poll()
        if not _pid_alive(pid) and not _group_alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if process is not None:
        process.wait(timeout=10)
    return False


class Server:
    """A running TorchServe with its run directory, endpoints and keys.

    Create one with :meth:`start`; stop it with :meth:`stop` (or use it as a context manager).
    """

    def __init__(self, run_dir: Path, props: Mapping[str, str], models: Sequence[str], pid: int) -> None:
        self.run_dir = run_dir
        self.props = dict(props)
        self.models = tuple(models)
        self.pid = pid
        self.endpoints = Endpoints.from_properties(props)
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    # -- paths
    @property
    def key_file(self) -> Path:
        return self.run_dir / KEY_FILE

    @property
    def console_log(self) -> Path:
        return self.run_dir / CONSOLE_LOG

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def token_auth(self) -> bool:
        """Whether calls need keys (TorchServe's default; off only with disable_token_authorization=true)."""
        return self.props.get("disable_token_authorization", "false").strip().lower() != "true"

    @property
    def keys(self) -> Keys | None:
        """The current keys, or None when token authorization is off."""
        return Keys.read(self.key_file) if self.token_auth else None

    def _bearer(self, kind: str) -> tuple[tuple[str, str], ...]:
        keys = self.keys
        if keys is None:
            return ()
        return (("authorization", f"Bearer {getattr(keys, kind)}"),)

    # -- lifecycle
    @classmethod
    def start(
        cls,
        *,
        run_dir: Path,
        model_store: Path,
        models: Sequence[str] | None = None,
        bind: str | None = None,
        overrides: Mapping[str, str | int] | None = None,
        timeout: float = 300.0,
        template: Path = TEMPLATE,
        extra_env: Mapping[str, str] | None = None,
    ) -> Server:
        """Renders the config, launches TorchServe in its own session, and returns once every model is ready.

        Args:
            run_dir: Working directory of the server (created). Logs, keys, pid and extracted archives go here.
            model_store: Folder with the .mar archives.
            models: Model names (``<name>.mar`` must exist in the store); None = every archive in the store.
            bind: Listen on this host instead of the template's loopback.
            overrides: Config keys to set (ports, limits).
            timeout: Seconds to wait for readiness before stopping the server and failing.
            template: The configuration template.
            extra_env: Environment variables for the server (added to this process's environment).

        Raises:
            ServerError: With the relevant log lines, when it cannot start or does not become ready.
        """
        model_store = model_store.resolve()
        if not model_store.is_dir():
            raise ServerError(
                f"model store {model_store} does not exist: build archives first "
                "(python -m model_store.archive build --all)"
            )
        available = sorted(p.stem for p in model_store.glob("*.mar"))
        names = list(models) if models else available
        if not names:
            raise ServerError(f"no .mar archives in {model_store}: python -m model_store.archive build --all")
        missing = [n for n in names if n not in available]
        if missing:
            raise ServerError(
                f"no archive for {', '.join(missing)} in {model_store} (available: {', '.join(available) or 'none'})"
            )
        run_dir = run_dir.resolve()
        old_pid = read_pid(run_dir)
        if old_pid is not None:
            raise ServerError(f"a server from {run_dir} is already running (pid {old_pid}): stop it first")
        (run_dir / "tmp").mkdir(parents=True, exist_ok=True)
        for stale in (KEY_FILE, PID_FILE):
            (run_dir / stale).unlink(missing_ok=True)
        props = render_config(
            run_dir / CONFIG_FILE, model_store=model_store, template=template, bind=bind, overrides=overrides
        )
        check_ports_free(props)
        (run_dir / MODELS_FILE).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")

        if not TORCHSERVE.exists():
            raise ServerError(f"{TORCHSERVE} not found: run bash deploy/setup.sh")
        cmd = [
            str(TORCHSERVE), "--start", "--foreground", "--ncs",
            "--model-store", str(model_store),
            "--ts-config", str(run_dir / CONFIG_FILE),
            "--models", *(f"{n}={n}.mar" for n in names),
        ]  # fmt: skip
        env = {**os.environ, **(extra_env or {})}
        # TorchServe's launcher keeps its pid file in the temp dir and the JVM extracts archives there.
        env["TMPDIR"] = env["TEMP"] = str(run_dir / "tmp")
        started = time.monotonic()
        with open(run_dir / CONSOLE_LOG, "wb") as console:
            process = subprocess.Popen(
                cmd, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        (run_dir / PID_FILE).write_text(f"{process.pid}\n", encoding="utf-8")
        server = cls(run_dir, props, names, process.pid)
        server.process = process
        try:
            server.wait_ready(timeout=timeout)
        except BaseException:
            server.stop()
            raise
        server.startup_seconds = time.monotonic() - started
        return server

    @classmethod
    def attach(cls, run_dir: Path) -> Server:
        """A handle on the server started earlier from ``run_dir`` (by another process)."""
        run_dir = run_dir.resolve()
        pid = read_pid(run_dir)
        if pid is None:
            raise ServerError(f"no server is running from {run_dir}")
        props = read_properties(run_dir / CONFIG_FILE)
        models = (run_dir / MODELS_FILE).read_text(encoding="utf-8").split()
        return cls(run_dir, props, models, pid)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stops the server like ``torchserve --stop`` (TERM, then KILL after ``timeout`` s) and removes its keys.

        Returns True when it stopped on TERM.
        """
        clean = stop_group(self.pid, timeout=timeout, process=self.process)
        for name in (KEY_FILE, PID_FILE):
            (self.run_dir / name).unlink(missing_ok=True)
        return clean

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- readiness
    def _get_json(self, url: str, timeout: float = 5.0) -> object:
        request = urllib.request.Request(url, headers={k.title(): v for k, v in self._bearer("management")})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def model_workers(self, name: str) -> tuple[int, int]:
        """(workers READY, workers required) for one model, from the management API."""
        described = self._get_json(f"{self.endpoints.management}/models/{urllib.parse.quote(name)}")
        if not isinstance(described, list) or not described:
            raise ServerError(f"unexpected answer describing {name}: {described!r}")
        info = described[0]
        ready = sum(1 for w in info.get("workers", []) if w.get("status") == "READY")
        return ready, max(int(info.get("minWorkers", 1)), 1)

    def ping(self, timeout: float = 5.0) -> str:
        """TorchServe's gRPC Ping with the inference key; returns the health text."""
        import grpc
        from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2_grpc
        from google.protobuf import empty_pb2

        with grpc.insecure_channel(self.endpoints.grpc) as channel:
            stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
            reply = stub.Ping(empty_pb2.Empty(), metadata=self._bearer("inference"), timeout=timeout)
        return str(json.loads(reply.health).get("status", reply.health))

    def load_failures(self, name: str) -> list[str]:
        """Lines of the worker log reporting that ``name`` failed to load (with its exception text)."""
        log = self.log_dir / "model_log.log"
        if not log.exists():
            return []
        marker = f"Failed to load model {name},"
        return [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if marker in ln]

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the console and worker logs, for error messages."""
        return (
            f"--- {self.console_log} (last {lines} lines)\n{_tail(self.console_log, lines)}\n"
            f"--- {self.log_dir / 'model_log.log'} (last {lines} lines)\n{_tail(self.log_dir / 'model_log.log', lines)}"
        )

    def status(self) -> dict[str, tuple[int, int]]:
        """Per model: (workers READY, workers required)."""
        return {name: self.model_workers(name) for name in self.models}

    def wait_ready(self, timeout: float = 300.0, poll: float = 0.5) -> None:
        """Returns once every model has its workers READY and gRPC Ping answers; raises ServerError otherwise."""
        deadline = time.monotonic() + timeout
        pending = list(self.models)
        last_error = "key file not written yet"
        while True:
            if not self.alive():
                raise ServerError(f"TorchServe exited during startup.\n{self.log_tail()}")
            for name in pending:
                failures = self.load_failures(name)
                if len(failures) >= 2:
                    raise ServerError(
                        f"model {name} failed to load (twice): {failures[-1].split('MODEL_LOG - ')[-1]}\n"
                        f"{self.log_tail()}"
                    )
            if not self.token_auth or self.key_file.exists():
                try:
                    pending = [n for n in pending if not _enough(self.model_workers(n))]
                    if not pending:
                        self.ping()
                        return
                    last_error = f"waiting for workers of {', '.join(pending)}"
                except (OSError, ValueError, KeyError, urllib.error.URLError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                except Exception as exc:  # grpc.RpcError and friends: not up yet
                    last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise ServerError(f"not ready after {timeout:.0f} s ({last_error}).\n{self.log_tail()}")
            time.sleep(poll)


def _enough(workers: tuple[int, int]) -> bool:
    ready, needed = workers
    return ready >= needed


def read_pid(run_dir: Path) -> int | None:
    """The pid of the server started from ``run_dir`` if it is still running (stale pid files are ignored)."""
    path = run_dir / PID_FILE
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # Guard against pid reuse: it must be a torchserve launcher using this run directory's config.
    if not any(b"torchserve" in part for part in cmdline) or str(run_dir / CONFIG_FILE).encode() not in cmdline:
        return None
    return pid


# ----------------------------------------------------------------------------------------------------- CLI


def _overrides(pairs: Iterable[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def how_to_call(server: Server, image: str = "image.png", model: str | None = None) -> str:
    """Where the server listens, where its keys are, and a Python and a curl call to copy (``image``, ``model``)."""
    ep = server.endpoints
    here = Path.cwd()

    def short(path: Path) -> str:
        return os.path.relpath(path) if path.is_relative_to(here) else str(path)

    key_file = short(server.key_file)
    python = short(Path(sys.executable))
    model = model or next((m for m in server.models if "classifier" in m), server.models[0])
    auth = server.token_auth
    key_cmd = f'$({python} -c \'import json; print(json.load(open("{key_file}"))["inference"]["key"])\')'
    lines = [
        f"camserve is serving {', '.join(server.models)}"
        + (f" (ready after {server.startup_seconds:.1f} s)" if server.startup_seconds else ""),
        f"  gRPC inference   {ep.grpc}  (TorchServe's InferenceAPIsService; camserve.Client talks to it)",
        f"  gRPC management  {ep.grpc_management}",
        f"  REST             {ep.rest}  (management {ep.management}, metrics {ep.metrics})",
    ]
    if auth:
        lines += [
            f'  keys             {key_file}  ("inference" key for calls, "management" for status;',
            "                   new keys on every start)",
        ]
    else:
        lines.append("  keys             none: token authorization is OFF for this server")
    client_args = f'"{ep.grpc}", token_file="{key_file}"' if auth else f'"{ep.grpc}"'
    run_dir_arg = "" if server.run_dir == DEFAULT_RUN_DIR else f" --run-dir {short(server.run_dir)}"
    bearer = f'-H "Authorization: Bearer {key_cmd}" ' if auth else ""
    lines += [
        f"  logs             {short(server.log_dir)}/",
        f"  stop             bash deploy/stop.sh{run_dir_arg}",
        "Call it from Python with the SDK:",
        f"  {python} - <<'EOF'",
        "  import camserve",
        f"  with camserve.Client({client_args}) as client:",
        f'      result = client.explain("{image}", model="{model}", methods=["gradcam", "guided_backprop"])',
        "      print(result.top, result.methods)",
        "  EOF",
        "Or with curl (raw image bytes in; JSON with predictions and the default maps out):",
        f"  curl {bearer}\\",
        f"       -H 'Content-Type: application/octet-stream' --data-binary @{image} {ep.rest}/predictions/{model}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "run"):
        p = sub.add_parser(name, help="start in the background and wait" if name == "start" else "foreground")
        p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
        p.add_argument("--model-store", type=Path, default=DEFAULT_MODEL_STORE)
        p.add_argument("--models", nargs="*", default=None, help="model names (default: every archive)")
        p.add_argument("--bind", default=None, help="listen on this host (default: the config's 127.0.0.1)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    for name in ("status", "stop"):
        p = sub.add_parser(name)
        p.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
        p.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    try:
        if args.command in ("start", "run"):
            # TERM/INT while starting must stop the half-started server, not orphan it: turn them into an
            # exception that Server.start's cleanup (and _run_foreground) handles.
            signal.signal(signal.SIGTERM, _terminate)
            signal.signal(signal.SIGINT, _terminate)
            print(
                f"serverctl: starting TorchServe from {args.run_dir} (waiting for the models' workers)", file=sys.stderr
            )
            try:
                server = Server.start(
                    run_dir=args.run_dir, model_store=args.model_store, models=args.models, bind=args.bind,
                    overrides=_overrides(args.overrides), timeout=args.timeout,
                )  # fmt: skip
            except _Terminated:
                print("serverctl: interrupted while starting; the server was stopped", file=sys.stderr)
                return 1
            print(how_to_call(server), flush=True)
            if args.command == "run":
                return _run_foreground(server)
            return 0
        if args.command == "status":
            server = Server.attach(args.run_dir)
            status = server.status()
            for name, (ready, needed) in status.items():
                print(f"{name}: {ready}/{needed} workers ready")
            return 0 if all(r >= n for r, n in status.values()) else 1
        if args.command == "stop":
            try:
                server = Server.attach(args.run_dir)
            except ServerError:
                print(f"serverctl: no server running from {args.run_dir.resolve()}")
                (args.run_dir / KEY_FILE).unlink(missing_ok=True)
                (args.run_dir / PID_FILE).unlink(missing_ok=True)
                return 0
            clean = server.stop(timeout=args.timeout)
            how = "" if clean else " (KILL: TERM timed out)"
            print(f"serverctl: stopped TorchServe (pid {server.pid}){how}")
            return 0
    except ServerError as exc:
        print(f"serverctl: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"serverctl: cannot reach the server: {exc}", file=sys.stderr)
        return 1
    return 2


class _Terminated(BaseException):
    """SIGTERM or SIGINT arrived (a BaseException, so no ``except Exception`` swallows it)."""


def _terminate(signum: int, _frame: object) -> None:
    raise _Terminated(signal.Signals(signum).name)


def _run_foreground(server: Server) -> int:
    """Keeps the server in the foreground until it exits or TERM/INT arrives (then stops it cleanly)."""
    if server.process is None:
        raise ServerError("run needs a server started by this process")
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
    except _Terminated as signame:
        print(f"serverctl: {signame}: stopping TorchServe", file=sys.stderr)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the shutdown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.stop()
        return 0
    print(f"serverctl: TorchServe exited with {server.process.returncode}\n{server.log_tail()}", file=sys.stderr)
    return server.process.returncode or 1


if __name__ == "__main__":
    sys.exit(main())
