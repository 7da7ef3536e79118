"""Fixtures shared by the whole suite: ONE real TorchServe per test session, started only when a test asks for it.

``camserve_server`` builds the model archives into a temporary folder with the project's own archive command,
then starts TorchServe through deploy/serverctl.py (the code behind deploy/start.sh) with deploy/config.properties:
its own temporary working directory, free loopback ports for all five listeners, token authorization on, system
metrics off. It returns once every model's worker is READY and gRPC Ping answers, and is stopped by its process
handle at the end of the session. The classifier is built with ``maxBatchDelay: 50`` so concurrent calls batch.

Set ``CAMSERVE_TEST_MODELS=shapes-classifier,shapes-vae`` to serve fewer models (faster local runs); tests that
need a model that is not served skip with the reason (``server.require(name)``). Under CI (``CI=true``) every skip
is a failure instead: nothing may go untested silently there.
When a test that uses the server fails, the server's log tail is attached to its report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from deploy import serverctl

ROOT = Path(__file__).resolve().parents[1]

SERVED_MODELS: tuple[str, ...] = ("shapes-classifier", "shapes-vae", "imagenet-efficientnet-lite0")
"""What the test server serves (each archive built from model_store/configs/<name>.yaml)."""

TEST_OVERRIDES: Mapping[str, Mapping[str, Any]] = {"shapes-classifier": {"maxBatchDelay": 50}}
"""Model-config changes for the test server only: a wider batching window so concurrent test calls batch."""

STARTUP_TIMEOUT = 300.0  # s; worker start is slow when the machine is busy (torch import, model build)


def java_major() -> int | None:
    """The major version of ``java`` on PATH, or None."""
    if shutil.which("java") is None:
        return None
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    for line in out.splitlines():
        if "version" in line and '"' in line:
            return int(line.split('"')[1].split(".")[0])
    return None


@pytest.fixture(scope="session")
def serverctl_module() -> ModuleType:
    """deploy/serverctl.py (config rendering, endpoints, start/stop) for tests that check it directly."""
    return serverctl


@dataclass(frozen=True)
class CamserveServer:
    """A running test server and how to reach it.

    Attributes:
        address: gRPC inference API, ``host:port`` (what ``camserve.Client`` takes).
        management_address: gRPC management API, ``host:port`` (the inference port + 1).
        rest_url: REST inference API base URL (``{rest_url}/predictions/<model>``).
        management_url: REST management API base URL (``{management_url}/models/<model>``).
        metrics_url: Metrics API base URL.
        inference_token: Key for inference calls (``authorization: Bearer <key>``).
        management_token: Key for management calls.
        key_file: TorchServe's key_file.json (``camserve.Client(token_file=...)`` reads it).
        models: The models being served.
        not_served: Models left out, with the reason (e.g. the zoo does not know the model yet).
        run_dir: The server's working directory (logs/, config.properties).
        archive_dir: Where the test archives were built.
        startup_seconds: Launch to every worker READY.
    """

    address: str
    management_address: str
    rest_url: str
    management_url: str
    metrics_url: str
    inference_token: str
    management_token: str
    key_file: Path
    models: tuple[str, ...]
    not_served: Mapping[str, str]
    run_dir: Path
    archive_dir: Path
    startup_seconds: float
    _handle: Any = field(repr=False, compare=False)

    def require(self, model: str) -> None:
        """Skips the calling test (with the reason) when ``model`` is not served."""
        if model not in self.models:
            pytest.skip(f"{model} is not served: {self.not_served.get(model, 'not in SERVED_MODELS')}")

    def log_tail(self, lines: int = 80) -> str:
        """The last lines of the server's console and worker logs."""
        return str(self._handle.log_tail(lines))

    def alive(self) -> bool:
        return bool(self._handle.alive())


def _build_archives(out: Path) -> tuple[list[str], dict[str, str]]:
    from handlers.engine.errors import NotFoundError
    from model_store import archive, zoo

    wanted = os.environ.get("CAMSERVE_TEST_MODELS")
    names = [n.strip() for n in wanted.split(",") if n.strip()] if wanted else list(SERVED_MODELS)
    built: list[str] = []
    not_served: dict[str, str] = {n: "left out by CAMSERVE_TEST_MODELS" for n in SERVED_MODELS if n not in names}
    for name in names:
        try:
            # The zoo must build it here (weights present, checksum right), or its worker would crash-loop.
            zoo.build(archive.load_config(name)["camserve"]["model"])
            archive.build(name, out, overrides=TEST_OVERRIDES.get(name))
        except NotFoundError as exc:  # a model, its weights or its handler has not landed yet: serve the others
            not_served[name] = exc.message
            continue
        built.append(name)
    return built, not_served


@pytest.fixture(scope="session")
def camserve_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CamserveServer]:
    """One real TorchServe on free loopback ports for the whole session (see the module docstring)."""
    major = java_major()
    if major is None or major < 17:
        pytest.skip(
            f"TorchServe needs Java 17+ (found {major or 'none'}): sudo apt-get install -y openjdk-17-jre-headless"
        )
    ctl = serverctl
    archives = tmp_path_factory.mktemp("archives")
    models, not_served = _build_archives(archives)
    if not models:
        pytest.fail(f"no model archive could be built: {not_served}")
    run_dir = tmp_path_factory.mktemp("torchserve")
    handle = ctl.Server.start(
        run_dir=run_dir,
        model_store=archives,
        models=models,
        overrides=ctl.free_port_overrides("127.0.0.1"),
        timeout=STARTUP_TIMEOUT,
    )
    try:
        keys = handle.keys
        ep = handle.endpoints
        yield CamserveServer(
            address=ep.grpc,
            management_address=ep.grpc_management,
            rest_url=ep.rest,
            management_url=ep.management,
            metrics_url=ep.metrics,
            inference_token=keys.inference,
            management_token=keys.management,
            key_file=handle.key_file,
            models=tuple(models),
            not_served=not_served,
            run_dir=run_dir,
            archive_dir=archives,
            startup_seconds=handle.startup_seconds,
            _handle=handle,
        )
    finally:
        handle.stop()


def under_ci() -> bool:
    """CI sets CI=true: there, every test must run (a skip hides a model not served, missing weights, ...)."""
    return os.environ.get("CI", "").strip().lower() == "true"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fails skipped tests under CI; attaches the server's log tail to the report of a failed test that used it.

    A skip is right on a developer's machine without Java or Chromium; under CI, whose set-up installs everything,
    it can only mean something is missing (a model that is not served, weights, a README section), so it fails.
    """
    report = yield
    if under_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {reason}"
    funcargs = getattr(item, "funcargs", {})
    server = funcargs.get("camserve_server") if isinstance(funcargs, dict) else None
    if report.failed and isinstance(server, CamserveServer):
        report.sections.append(("camserve server log (tail)", server.log_tail()))
    return report
