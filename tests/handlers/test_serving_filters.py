"""Filters requests through the classifier handler: answers equal the engine's, errors in band, batches unaffected."""

from __future__ import annotations

import time

import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import MockContext, as_array, call, grpc_row, loaded_classifier, png_bytes, request, response
from test_serving_handler import config

from handlers.engine import filters
from handlers.serving._filters import answer_filters
from handlers.serving._routing import DEADLINE_KEY
from handlers.serving.classifier import ClassifierHandler


@pytest.fixture(scope="module")
def handler() -> ClassifierHandler:
    return loaded_classifier(config())


@pytest.fixture
def ctx() -> MockContext:
    return MockContext(config(), gpu_id=0)


def _row(**fields: object) -> dict[str, bytes]:
    return {"filters": explain_pb2.FiltersRequest(**fields).SerializeToString()}  # type: ignore[arg-type]


def _answer(body: bytes) -> explain_pb2.FiltersResponse:
    return explain_pb2.FiltersResponse.FromString(body)


def test_the_first_layer_by_default_as_the_engine_computes_it(handler: ClassifierHandler, ctx: MockContext) -> None:
    [body] = call(handler, ctx, [_row(request_id="f1")])
    got = _answer(body)
    assert not got.error.code and got.request_id == "f1" and got.model_name == "test-model"
    assert got.conv_layers[0] == "conv1" and "layer4.1.conv2" in got.conv_layers
    [f] = got.filters
    [want] = filters(handler.loaded.model)
    assert (f.layer, f.rgb, f.in_channels, f.out_channels, f.groups) == ("conv1", True, 3, 64, 1)
    assert (f.kernel_height, f.kernel_width) == (7, 7)
    assert f.tiles.encoding == explain_pb2.FLOAT32
    np.testing.assert_array_equal(as_array(f.tiles), want.tiles.numpy())
    np.testing.assert_array_equal(as_array(f.norms), want.norms.numpy())
    np.testing.assert_array_equal(as_array(f.connections), want.connections.numpy())
    assert ctx.request_processor[0].response_headers["content-type"] == "application/x-protobuf"


def test_named_layers_and_max_channels(handler: ClassifierHandler, ctx: MockContext) -> None:
    [body] = call(handler, ctx, [_row(layers=["layer1.0.conv1", "layer3.0.conv2"], max_channels=5)])
    got = _answer(body)
    assert [(f.layer, f.rgb, f.out_channels) for f in got.filters] == [
        ("layer1.0.conv1", False, 64),
        ("layer3.0.conv2", False, 256),
    ]
    assert [tuple(f.tiles.shape) for f in got.filters] == [(5, 3, 3)] * 2
    assert tuple(got.filters[1].connections.shape) == (5, 256)


@pytest.mark.parametrize(
    ("row", "code", "field"),
    [
        (_row(layers=["fc"]), "INVALID_ARGUMENT", "layers[0]"),
        (_row(layers=["conv9"]), "NOT_FOUND", "layers"),
        ({"filters": b"\xff\xff not protobuf"}, "INVALID_ARGUMENT", "filters"),
        ({"filters": 42}, "INVALID_ARGUMENT", "filters"),
        (_row(request_id="x" * 300), "INVALID_ARGUMENT", "request_id"),
        ({**_row(), DEADLINE_KEY: str(time.time() * 1000 - 5000)}, "DEADLINE_EXCEEDED", ""),
    ],
)
def test_bad_filters_requests_are_answered_in_band(
    handler: ClassifierHandler, ctx: MockContext, row: dict[str, object], code: str, field: str
) -> None:
    [body] = call(handler, ctx, [row])
    err = _answer(body).error
    assert (err.code, err.field) == (code, field)
    assert not _answer(body).filters


def test_an_answer_over_the_response_limit_is_refused(handler: ClassifierHandler) -> None:
    body = answer_filters(
        _row(layers=["layer4.1.conv2"]),
        handler.loaded.model,
        max_response_bytes=100_000,
        model_name="m",
        model_version="1",
    )
    err = _answer(body).error
    assert (err.code, err.field) == ("RESOURCE_EXHAUSTED", "max_channels") and "100000" in err.message
    fits = answer_filters(
        _row(layers=["layer4.1.conv2"], max_channels=8),
        handler.loaded.model,
        max_response_bytes=100_000,
        model_name="m",
        model_version="1",
    )
    assert not _answer(fits).error.code


def test_filters_items_share_a_batch_with_explanations(handler: ClassifierHandler, ctx: MockContext) -> None:
    explain = request([png_bytes(seed=5)], methods=["gradcam"], request_id="e")
    out = call(handler, ctx, [grpc_row(explain), _row(request_id="f"), grpc_row(explain)])
    assert response(out[0]).results[0].maps and response(out[2]).results[0].maps
    assert _answer(out[1]).request_id == "f" and _answer(out[1]).filters
