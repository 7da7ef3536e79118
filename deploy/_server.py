"""A running camserve server: TorchServe launched in its own session, the gateway in front, readiness and stop.

:class:`Server` is what :mod:`deploy.serverctl` (and the tests, benchmarks and demo) start and stop; the reasons
behind each step are in serverctl's docstring, the gateway's in :mod:`deploy.gateway`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy._config import (
    ROOT,
    TEMPLATE,
    Endpoints,
    ServerError,
    check_ports_free,
    free_port,
    read_properties,
    render_config,
)
from deploy._process import pid_alive, stop_group, tail
from deploy._tuning import server_env
from deploy.gateway import GatewayConfig

DEFAULT_RUN_DIR = ROOT / ".run"
DEFAULT_MODEL_STORE = ROOT / "model_store" / "archives"
TORCHSERVE = Path(sys.executable).with_name("torchserve")

PID_FILE = "torchserve.pid"
MODELS_FILE = "models.txt"
CONSOLE_LOG = "torchserve.out"
CONFIG_FILE = "config.properties"
KEY_FILE = "key_file.json"
GATEWAY_CONFIG = "gateway.json"
GATEWAY_PID = "gateway.pid"
GATEWAY_LOG = "gateway.log"
GATEWAY_READY = "gateway.ready"
#: Bytes TorchServe accepts beyond max_request_size behind the gateway: the deadline map entry (~40 B) and margin.
DEADLINE_ENTRY_ROOM = 4096


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


def _grpc_target(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def gateway_plan(props: Mapping[str, str], run_dir: Path) -> tuple[GatewayConfig, dict[str, str]]:
    """The gateway for a server configured by ``props``, and the overrides that move TorchServe's gRPC behind it.

    The gateway takes the configured gRPC listeners (and TLS, when ``enable_grpc_ssl`` is on); TorchServe's own
    move to free loopback ports, plaintext, reachable only from this machine.
    """
    upstream, upstream_management = free_port(), free_port()
    while upstream_management == upstream:
        upstream_management = free_port()
    tls = props.get("enable_grpc_ssl", "false").strip().lower() == "true"
    token_auth = props.get("disable_token_authorization", "false").strip().lower() != "true"
    config = GatewayConfig(
        inference=_grpc_target(
            props.get("grpc_inference_address", "127.0.0.1"), props.get("grpc_inference_port", 7070)
        ),
        management=_grpc_target(
            props.get("grpc_management_address", "127.0.0.1"), props.get("grpc_management_port", 7071)
        ),
        upstream_inference=f"127.0.0.1:{upstream}",
        upstream_management=f"127.0.0.1:{upstream_management}",
        key_file=str(run_dir / KEY_FILE) if token_auth else None,
        max_request_bytes=int(props.get("max_request_size", 6_553_500)),
        max_response_bytes=int(props.get("max_response_size", 6_553_500)),
        max_inflight=int(props.get("job_queue_size", 100)),
        certificate_file=props.get("certificate_file") if tls else None,
        private_key_file=props.get("private_key_file") if tls else None,
    )
    overrides = {
        "grpc_inference_port": str(upstream),
        "grpc_management_port": str(upstream_management),
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "enable_grpc_ssl": "false",
        # The gateway enforces max_request_size (naming it); TorchServe's own limit leaves room for the deadline
        # entry the gateway adds to every request, so a request the gateway admits is never cut off behind it.
        "max_request_size": str(config.max_request_bytes + DEADLINE_ENTRY_ROOM),
    }
    return config, overrides


class Server:
    """A running camserve server (TorchServe, and the gateway its gRPC clients call) with its endpoints and keys.

    Create one with :meth:`start`; stop it with :meth:`stop` (or use it as a context manager). ``endpoints.grpc``
    is where clients call (the gateway); ``torchserve_grpc`` is TorchServe's own listener behind it.
    """

    def __init__(
        self,
        run_dir: Path,
        props: Mapping[str, str],
        models: Sequence[str],
        pid: int,
        gateway: GatewayConfig | None = None,
        gateway_pid: int | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.props = dict(props)
        self.models = tuple(models)
        self.pid = pid
        self.gateway = gateway
        self.gateway_pid = gateway_pid
        own = Endpoints.from_properties(props)
        self.torchserve_grpc = own.grpc
        self.endpoints = own
        if gateway is not None:
            self.endpoints = dataclasses.replace(
                own, grpc=_connectable(gateway.inference), grpc_management=_connectable(gateway.management)
            )
        self.process: subprocess.Popen[bytes] | None = None
        self.gateway_process: subprocess.Popen[bytes] | None = None
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
        gateway: bool = True,
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
            extra_env: Environment variables for the server (over this process's and :mod:`deploy._tuning`'s).
            gateway: Put :mod:`deploy.gateway` in front of TorchServe's gRPC (False only to measure TorchServe alone).

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
        for stale in (KEY_FILE, PID_FILE, GATEWAY_CONFIG, GATEWAY_PID, GATEWAY_READY):
            (run_dir / stale).unlink(missing_ok=True)
        props = render_config(
            run_dir / CONFIG_FILE, model_store=model_store, template=template, bind=bind, overrides=overrides
        )
        check_ports_free(props)
        plan: GatewayConfig | None = None
        if gateway:
            plan, behind = gateway_plan(props, run_dir)
            props = render_config(
                run_dir / CONFIG_FILE, model_store=model_store, template=template, bind=bind,
                overrides={**(overrides or {}), **behind},
            )  # fmt: skip
            plan.save(run_dir / GATEWAY_CONFIG)
        (run_dir / MODELS_FILE).write_text("".join(f"{n}\n" for n in names), encoding="utf-8")

        if not TORCHSERVE.exists():
            raise ServerError(f"{TORCHSERVE} not found: run bash deploy/setup.sh")
        cmd = [
            str(TORCHSERVE), "--start", "--foreground", "--ncs",
            "--model-store", str(model_store),
            "--ts-config", str(run_dir / CONFIG_FILE),
            "--models", *(f"{n}={n}.mar" for n in names),
        ]  # fmt: skip
        env = server_env(os.environ, extra_env)
        # TorchServe's launcher keeps its pid file in the temp dir and the JVM extracts archives there.
        env["TMPDIR"] = env["TEMP"] = str(run_dir / "tmp")
        started = time.monotonic()
        with open(run_dir / CONSOLE_LOG, "wb") as console:
            process = subprocess.Popen(
                cmd, cwd=run_dir, env=env, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        (run_dir / PID_FILE).write_text(f"{process.pid}\n", encoding="utf-8")
        server = cls(run_dir, props, names, process.pid, plan)
        server.process = process
        try:
            server.wait_ready(timeout=timeout)
            if plan is not None:
                server._start_gateway(env, timeout=timeout)
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
        plan = GatewayConfig.load(run_dir / GATEWAY_CONFIG) if (run_dir / GATEWAY_CONFIG).exists() else None
        return cls(run_dir, props, models, pid, plan, read_gateway_pid(run_dir))

    def _start_gateway(self, env: Mapping[str, str], *, timeout: float) -> None:
        """Starts the gateway in its own session and returns once it listens (and, without TLS, answers Ping)."""
        ready = self.run_dir / GATEWAY_READY
        cmd = [sys.executable, "-m", "deploy.gateway", str(self.run_dir / GATEWAY_CONFIG), "--ready-file", str(ready)]
        with open(self.run_dir / GATEWAY_LOG, "wb") as log:
            self.gateway_process = subprocess.Popen(
                cmd, cwd=ROOT, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.gateway_pid = self.gateway_process.pid
        (self.run_dir / GATEWAY_PID).write_text(f"{self.gateway_pid}\n", encoding="utf-8")
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.gateway_process.poll() is not None:
                raise ServerError(f"the gateway exited at start.\n{tail(self.run_dir / GATEWAY_LOG)}")
            if time.monotonic() > deadline:
                raise ServerError(f"the gateway did not start in {timeout:.0f} s.\n{tail(self.run_dir / GATEWAY_LOG)}")
            time.sleep(0.1)
        if self.gateway is not None and self.gateway.certificate_file is None:
            self.ping()

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stops the server like ``torchserve --stop`` (TERM, then KILL after ``timeout`` s) and removes its keys.

        Returns True when it stopped on TERM.
        """
        if self.gateway_pid is not None and pid_alive(self.gateway_pid):
            stop_group(self.gateway_pid, timeout=min(timeout, 10.0), process=self.gateway_process)
        clean = stop_group(self.pid, timeout=timeout, process=self.process)
        for name in (KEY_FILE, PID_FILE, GATEWAY_PID, GATEWAY_READY):
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

    def health(self, timeout: float = 5.0, *, target: str | None = None) -> dict[str, object]:
        """gRPC Ping with the inference key (through the gateway unless ``target`` is given): the health JSON."""
        import grpc
        from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2_grpc
        from google.protobuf import empty_pb2

        with grpc.insecure_channel(target or self.endpoints.grpc) as channel:
            stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
            reply = stub.Ping(empty_pb2.Empty(), metadata=self._bearer("inference"), timeout=timeout)
        try:
            health = json.loads(reply.health)
        except ValueError:
            return {"status": reply.health}
        return health if isinstance(health, dict) else {"status": reply.health}

    def ping(self, timeout: float = 5.0, *, target: str | None = None) -> str:
        """The health status text: "Healthy", or "Unhealthy" while a model cannot serve."""
        return str(self.health(timeout, target=target).get("status"))

    def load_failures(self, name: str) -> list[str]:
        """Lines of the worker log reporting that ``name`` failed to load (with its exception text)."""
        log = self.log_dir / "model_log.log"
        if not log.exists():
            return []
        marker = f"Failed to load model {name},"
        return [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if marker in ln]

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the console, worker and gateway logs, for error messages."""
        logs = [self.console_log, self.log_dir / "model_log.log", self.run_dir / GATEWAY_LOG]
        return "\n".join(f"--- {log} (last {lines} lines)\n{tail(log, lines)}" for log in logs if log.exists())

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
                        self.ping(target=self.torchserve_grpc)
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
    if not pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    # Guard against pid reuse: it must be a torchserve launcher using this run directory's config.
    if not any(b"torchserve" in part for part in cmdline) or str(run_dir / CONFIG_FILE).encode() not in cmdline:
        return None
    return pid


def read_gateway_pid(run_dir: Path) -> int | None:
    """The pid of the gateway started from ``run_dir`` if it is still running."""
    try:
        pid = int((run_dir / GATEWAY_PID).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if b"deploy.gateway" not in cmdline or str(run_dir / GATEWAY_CONFIG).encode() not in cmdline:
        return None
    return pid if pid_alive(pid) else None


def _connectable(target: str) -> str:
    """A listener's ``host:port`` as this machine reaches it (a wildcard bind is reached over loopback)."""
    host, _, port = target.rpartition(":")
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "::") else target
