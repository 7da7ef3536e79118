"""Fixtures of the reliability tests: callers of the session server and the "same worker, still serving" check.

Every test here that sends something hostile then proves, through :func:`still_serving`, that a good request is
answered and that the model's worker process is the one that was serving before (TorchServe's management API
describes each worker with its ``pid``): a bad input must be answered, never survived by a restart.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import camserve
import grpc
import pytest
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2_grpc
from reliability_helpers import DEADLINE, RawCaller, grpc_channel, png, shapes, worker_pids

# The handler tests' mock TorchServe context (tests/handlers/serving_helpers.py), for test_device_faults.py.
sys.path.append(str(Path(__file__).resolve().parents[1] / "handlers"))

CLASSIFIER = "shapes-classifier"
VAE = "shapes-vae"


@pytest.fixture(scope="module")
def sdk(camserve_server: Any) -> Iterator[camserve.Client]:
    """The SDK with the inference key and no retries: what fails must surface at once, not be retried away."""
    with camserve.Client(
        camserve_server.address, token_file=camserve_server.key_file, retries=0, timeout=DEADLINE
    ) as c:
        yield c


@pytest.fixture(scope="module")
def raw_channel(camserve_server: Any) -> Iterator[grpc.Channel]:
    with grpc_channel(camserve_server.address) as channel:
        yield channel


@pytest.fixture(scope="module")
def raw(camserve_server: Any, raw_channel: grpc.Channel) -> RawCaller:
    """Generated TorchServe stubs with the inference key, for what the SDK refuses to send."""
    return RawCaller(inference_pb2_grpc.InferenceAPIsServiceStub(raw_channel), camserve_server.inference_token)


@pytest.fixture(scope="module")
def pids(camserve_server: Any) -> Callable[[str], list[int]]:
    """The worker process ids of a served model."""

    def of(model: str) -> list[int]:
        camserve_server.require(model)
        return worker_pids(camserve_server.management_url, camserve_server.management_token, model)

    return of


@pytest.fixture(scope="module")
def still_serving(sdk: camserve.Client, pids: Callable[[str], list[int]]) -> Callable[[str, list[int]], None]:
    """``check(model, pids_before)``: a good request to ``model`` succeeds, served by the same worker processes."""
    good = png(shapes(1, start=900)[0])

    def check(model: str, before: list[int]) -> None:
        result = sdk.explain(good, model=model, methods=["gradcam"] if model == CLASSIFIER else ["area_saliency"])
        assert result.ok and result.maps, result.error
        assert pids(model) == before, "the worker process was replaced"

    return check
