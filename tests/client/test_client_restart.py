"""Retries against a real TorchServe that restarts: a call made while it is down succeeds once it is back.

This test runs its own small server (the session server must stay up for everyone else), built from the session's
archives, stops it and starts it again on the same ports. The restarted server writes new keys; the client, given
the key file, keeps working without being told. Without retries the same call fails with Unavailable.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import camserve
import numpy as np
import pytest

from deploy import serverctl

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "model_store" / "samples"


def test_retries_carry_a_call_across_a_server_restart(camserve_server: Any, tmp_path: Path) -> None:
    model = next((m for m in ("shapes-classifier", "imagenet-efficientnet-lite0") if m in camserve_server.models), None)
    if model is None:
        pytest.skip(f"no classifier is served: {dict(camserve_server.not_served)}")
    image: Any = np.full((64, 64, 3), 120, np.uint8) if model == "shapes-classifier" else SAMPLES / "cat.jpg"
    ctl = serverctl
    run_dir = tmp_path / "restart"
    overrides = ctl.free_port_overrides("127.0.0.1")
    start = {"run_dir": run_dir, "model_store": camserve_server.archive_dir, "models": [model], "timeout": 300}
    server = ctl.Server.start(overrides=overrides, **start)
    address = server.endpoints.grpc
    key_file = run_dir / "key_file.json"
    restarted: list[Any] = []
    failure: list[BaseException] = []

    def restart() -> None:
        try:
            time.sleep(1.0)  # let the client meet a server that is down
            restarted.append(ctl.Server.start(overrides=overrides, **start))
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    try:
        with camserve.Client(address, token_file=key_file, timeout=120) as client:
            before = client.explain(image, model=model, methods=["gradcam"])
            old_key = key_file.read_text()
            server.stop()

            with (
                camserve.Client(address, token_file=key_file, retries=0) as no_retries,
                pytest.raises(camserve.Unavailable),
            ):
                no_retries.ping()

            thread = threading.Thread(target=restart)
            thread.start()
            started = time.monotonic()
            with camserve.Client(address, token_file=key_file, timeout=400, retries=500, backoff=0.5) as patient:
                after = patient.explain(image, model=model, methods=["gradcam"])
            waited = time.monotonic() - started
            thread.join()
            assert not failure, failure
            assert waited > 1.0  # the call really waited for the restart
            assert key_file.read_text() != old_key  # new keys, picked up from the file
            # the first client, whose cached key is now stale, recovers by re-reading the key file
            assert client.ping() == "Healthy"
        assert before.top.class_id == after.top.class_id  # type: ignore[union-attr]
        np.testing.assert_allclose(after.map("gradcam").array, before.map("gradcam").array, rtol=1e-3, atol=1e-4)
    finally:
        for s in [server, *restarted]:
            s.stop()
