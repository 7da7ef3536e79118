"""Starts, waits for and stops a camserve server (TorchServe + the gRPC gateway): the one place that runs it.

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
- Configuration from the environment (containers): ``CAMSERVE_SET_<KEY>=value`` sets config.properties key
  ``<key>`` (lower-cased), like ``--set key=value``, which wins over it; ``CAMSERVE_MODELS`` (space- or
  comma-separated) is the default of ``--models``. Through serverctl, not TorchServe's own ``TS_*`` variables, so
  the gateway is planned from the same values TorchServe runs with.
- gRPC clients reach TorchServe through :mod:`deploy.gateway` (why: its docstring): the gateway listens on the
  configured gRPC ports and TorchServe's own gRPC listeners move to free loopback ports, TLS moving to the
  gateway. ``--no-gateway`` serves TorchServe's gRPC directly (for side-by-side measurements only).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import urllib.error
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from deploy._config import Endpoints, ServerError, check_ports_free, free_port_overrides, read_properties, render_config
from deploy._server import DEFAULT_MODEL_STORE, DEFAULT_RUN_DIR, KEY_FILE, PID_FILE, Keys, Server, read_pid

__all__ = [
    "Endpoints",
    "Keys",
    "Server",
    "ServerError",
    "check_ports_free",
    "env_models",
    "env_overrides",
    "free_port_overrides",
    "how_to_call",
    "main",
    "read_pid",
    "read_properties",
    "render_config",
]

# ----------------------------------------------------------------------------------------------------- CLI


#: Environment variables ``CAMSERVE_SET_<KEY>`` set config key ``<key>`` (lower-cased).
ENV_SET_PREFIX = "CAMSERVE_SET_"
#: Environment variable naming the models to serve (the default of ``--models``).
ENV_MODELS = "CAMSERVE_MODELS"


def env_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """The config keys set by ``CAMSERVE_SET_<KEY>=value`` variables (``--set`` on the command line wins)."""
    out = {}
    for name, value in sorted(environ.items()):
        if name.startswith(ENV_SET_PREFIX):
            key = name[len(ENV_SET_PREFIX) :].lower()
            if not key:
                raise SystemExit(f"{name}: the variable must name a config key, e.g. {ENV_SET_PREFIX}JOB_QUEUE_SIZE")
            out[key] = value.strip()
    return out


def env_models(environ: Mapping[str, str]) -> list[str] | None:
    """The models named by ``CAMSERVE_MODELS`` (None when unset or empty: every archive)."""
    names = environ.get(ENV_MODELS, "").replace(",", " ").split()
    return names or None


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
        "                   "
        + (
            f"(camserve's gateway; TorchServe's own gRPC listens on {server.torchserve_grpc}, loopback only)"
            if server.gateway is not None
            else "(TorchServe directly: no gateway)"
        ),
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
        p.add_argument(
            "--no-gateway", dest="gateway", action="store_false",
            help="serve TorchServe's gRPC directly, without camserve's gateway (side-by-side measurements only)",
        )  # fmt: skip
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
                    run_dir=args.run_dir, model_store=args.model_store, bind=args.bind,
                    models=args.models if args.models is not None else env_models(os.environ),
                    overrides={**env_overrides(os.environ), **_overrides(args.overrides)}, timeout=args.timeout,
                    gateway=args.gateway,
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
            healthy = all(r >= n for r, n in status.values())
            if server.gateway is not None:
                if server.gateway_pid is None:
                    print("gateway: not running")
                    return 1
                if server.gateway.certificate_file is None:  # over TLS the worker counts above are the check
                    health = server.health()
                    print(f"gateway: {health.get('status')}" + (f" {health['models']}" if "models" in health else ""))
                    healthy = healthy and health.get("status") == "Healthy"
            return 0 if healthy else 1
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
    """Keeps the server in the foreground until TorchServe or the gateway exits, or TERM/INT arrives.

    Either process ending ends the run (after stopping the other), so a container's restart policy restarts both.
    """
    if server.process is None:
        raise ServerError("run needs a server started by this process")
    parts = [("TorchServe", server.process)]
    if server.gateway_process is not None:
        parts.append(("the gateway", server.gateway_process))
    try:
        while all(process.poll() is None for _, process in parts):
            time.sleep(0.5)
    except _Terminated as signame:
        print(f"serverctl: {signame}: stopping TorchServe and the gateway", file=sys.stderr)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the shutdown short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.stop()
        return 0
    name, ended = next((name, process) for name, process in parts if process.poll() is not None)
    print(f"serverctl: {name} exited with {ended.returncode}\n{server.log_tail()}", file=sys.stderr)
    server.stop()
    return ended.returncode or 1


if __name__ == "__main__":
    sys.exit(main())
