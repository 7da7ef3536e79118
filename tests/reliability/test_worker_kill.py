"""A worker killed with SIGKILL while serving: nothing hangs, nothing is lost silently, TorchServe restarts it.

These tests run their own small server (one shapes-classifier worker, built from the session's archives) because
they kill its worker; the session server stays clean for everyone else. Several SDK clients keep the worker busy
with real work; the worker process is killed (``kill -9``) mid-batch; every call is then accounted for: it
succeeded, or it failed with a clear, typed error. No call outlives its deadline and the model serves afterwards
from a new worker process.

TorchServe 0.12 itself answers the calls of the killed batch "Worker died." with INTERNAL or, seen here as often,
RESOURCE_EXHAUSTED (its frontend's status for a worker connection that broke mid-response), which the SDK rightly
retries neither. The gateway (deploy/gateway.py) turns that answer into UNAVAILABLE — explanations are pure and
safe to repeat — so the SDK's retry completes every request.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import camserve
import pytest
from conftest import CLASSIFIER
from reliability_helpers import png, shapes, worker_pids

from deploy import serverctl

pytestmark = pytest.mark.integration

CLIENTS = 4
CALL_DEADLINE = 90.0  # s per call (retries included); bounds every wait below
RESTART_WAIT = 240.0  # s for TorchServe to bring a new worker up on a busy machine
IMAGES = [png(im) for im in shapes(8, start=1000)]
BATCH_STARTED = "Backend received inference at:"  # TorchServe's worker logs it as a batch arrives
WORK = {"methods": ["gradcam", "guided_backprop", "saliency"], "top_k": 3}  # ~1 s per call on a CPU


@dataclass
class Tally:
    """What happened to every call the clients sent."""

    sent: int = 0
    succeeded: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, error: camserve.CamserveError | None) -> None:
        with self.lock:
            if error is None:
                self.succeeded += 1
            else:
                name = f"{type(error).__name__}({error.code})"
                self.failed[name] += 1
                self.messages[name] = error.message


@dataclass(frozen=True)
class KillServer:
    server: serverctl.Server
    key_file: Path

    def pids(self) -> list[int]:
        keys = self.server.keys
        assert keys is not None
        return worker_pids(self.server.endpoints.management, keys.management, CLASSIFIER)

    def client(self, retries: int) -> camserve.Client:
        return camserve.Client(
            self.server.endpoints.grpc, token_file=self.key_file, timeout=CALL_DEADLINE, retries=retries, backoff=0.5
        )


@pytest.fixture(scope="module")
def kill_server(camserve_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillServer]:
    camserve_server.require(CLASSIFIER)
    run_dir = tmp_path_factory.mktemp("kill-server")
    server = serverctl.Server.start(
        run_dir=run_dir,
        model_store=camserve_server.archive_dir,
        models=[CLASSIFIER],
        overrides=serverctl.free_port_overrides("127.0.0.1"),
        timeout=300,
    )
    try:
        yield KillServer(server, server.key_file)
    finally:
        server.stop()


def wait_for_new_worker(target: KillServer, old: list[int]) -> list[int]:
    """The new worker's pid once TorchServe has restarted it (bounded by RESTART_WAIT)."""
    deadline = time.monotonic() + RESTART_WAIT
    while time.monotonic() < deadline:
        pids = target.pids()
        if pids and pids != old and target.server.model_workers(CLASSIFIER)[0] >= 1:
            return pids
        time.sleep(0.5)
    raise AssertionError(f"no new worker within {RESTART_WAIT:.0f} s:\n{target.server.log_tail()}")


def batches_received(target: KillServer) -> int:
    """How many batches the workers have started on, from the worker log (one line per batch)."""
    log = target.server.log_dir / "model_log.log"
    return log.read_text(encoding="utf-8", errors="replace").count(BATCH_STARTED)


def wait_for_batch_in_worker(target: KillServer) -> None:
    """Returns just after the worker has received a new batch (a batch takes ~1 s: it is still running)."""
    seen = batches_received(target)
    deadline = time.monotonic() + CALL_DEADLINE
    while batches_received(target) == seen:
        assert time.monotonic() < deadline, "the worker received no batch"
        time.sleep(0.01)


def kill_while_serving(target: KillServer, retries: int) -> tuple[Tally, list[int], list[int]]:
    """Clients keep the worker busy; once calls are flowing the worker is killed; the clients stop after it is back.

    Returns the tally, the pids before and the pids after the kill.
    """
    before = target.pids()
    tally = Tally()
    flowing = threading.Event()
    restarted = threading.Event()

    def client_loop() -> None:
        with target.client(retries) as client:
            while not restarted.is_set():
                with tally.lock:
                    tally.sent += 1
                try:
                    client.explain(IMAGES, model=CLASSIFIER, strict=True, **WORK)
                    tally.record(None)
                    flowing.set()
                except camserve.CamserveError as err:
                    tally.record(err)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        assert flowing.wait(timeout=CALL_DEADLINE), "no call succeeded before the kill"
        wait_for_batch_in_worker(target)
        os.kill(before[0], signal.SIGKILL)
        after = wait_for_new_worker(target, before)
        with target.client(retries=0) as probe:  # one answer from the new worker before the clients stop
            probe.explain(IMAGES[0], model=CLASSIFIER, methods=["gradcam"])
    finally:
        restarted.set()
        for thread in threads:
            thread.join(timeout=CALL_DEADLINE + 30)
    assert not any(t.is_alive() for t in threads), "a call hung past its deadline"
    return tally, before, after


def test_killed_worker_every_call_accounted_for_and_the_model_serves_again(kill_server: KillServer) -> None:
    tally, before, after = kill_while_serving(kill_server, retries=0)
    assert len(after) == 1 and after != before  # a new process, by TorchServe's restart
    assert tally.sent == tally.succeeded + sum(tally.failed.values()), tally
    assert tally.succeeded > 0 and sum(tally.failed.values()) >= 1, tally  # the kill hit a batch in flight
    for name, message in tally.messages.items():  # clear errors: each says the worker died (or is restarting)
        assert "Worker died" in message or "restart" in message.lower(), (name, message)
    with kill_server.client(retries=0) as client:
        assert client.ping() == "Healthy"
        assert client.explain(IMAGES[1], model=CLASSIFIER, methods=["gradcam"]).ok
    assert kill_server.pids() == after


def test_killed_worker_calls_get_a_retryable_code_and_the_sdk_retry_completes_them(kill_server: KillServer) -> None:
    tally, before, after = kill_while_serving(kill_server, retries=5)
    assert after != before
    assert tally.sent == tally.succeeded, tally  # every call completed, by retrying the affected ones
