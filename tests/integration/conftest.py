"""Fixtures of the gRPC tests of a real TorchServe (test_server_grpc*.py): a channel, callers and the engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2_grpc
from server_grpc_helpers import (
    CLASSIFIER,
    MAX_MESSAGE,
    Caller,
)


@pytest.fixture(scope="module")
def channel(camserve_server: Any) -> Iterator[grpc.Channel]:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    with grpc.insecure_channel(camserve_server.address, options=options) as ch:
        yield ch


@pytest.fixture(scope="module")
def any_caller(camserve_server: Any, channel: grpc.Channel) -> Caller:
    """A caller for tests of TorchServe's own behaviour (auth, limits, routing): any served model will do."""
    return Caller(inference_pb2_grpc.InferenceAPIsServiceStub(channel), camserve_server.inference_token)


@pytest.fixture(scope="module")
def served(camserve_server: Any) -> str:
    """The model those tests call: the shapes classifier when served, else the first served model."""
    return CLASSIFIER if CLASSIFIER in camserve_server.models else camserve_server.models[0]


@pytest.fixture(scope="module")
def caller(camserve_server: Any, any_caller: Caller) -> Caller:
    camserve_server.require(CLASSIFIER)
    return any_caller


@pytest.fixture(scope="module")
def engine() -> Any:
    """The classifier's engine in this process: the same weights and code the worker runs."""
    from handlers.engine import Explainer
    from model_store import zoo

    return Explainer(zoo.build(CLASSIFIER), labels=zoo.info(CLASSIFIER)["labels"])
