"""Activation maximisation through the handler on the trained demo classifier: answers, budgets, errors in band."""

from __future__ import annotations

import itertools
import time
from typing import Any

import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import MockContext, as_array, call, grpc_row, loaded_classifier, png_bytes, request, response

from handlers.serving._routing import DEADLINE_KEY
from handlers.serving.classifier import ClassifierHandler

#: Generous: a step count, not the wall clock, must end the step-bounded cases on a loaded 2-core machine.
MAX_MS = 30_000


def config() -> dict[str, Any]:
    section = {
        "kind": "classifier",
        "model": "shapes-classifier",
        "input_size": [64, 64],
        "resize": 64,
        "limits": {"max_visualize_steps": 200, "max_visualize_ms": MAX_MS},
    }
    return {"minWorkers": 1, "batchSize": 8, "camserve": section}


@pytest.fixture(scope="module")
def handler() -> ClassifierHandler:
    return loaded_classifier(config())


@pytest.fixture
def ctx() -> MockContext:
    return MockContext(config(), gpu_id=0)


def _row(**fields: Any) -> dict[str, Any]:
    return {"visualize": explain_pb2.VisualizeRequest(**fields).SerializeToString()}


def _answer(body: bytes) -> explain_pb2.VisualizeResponse:
    return explain_pb2.VisualizeResponse.FromString(body)


def test_a_class_is_maximised_and_answered_as_pixels(handler: ClassifierHandler, ctx: MockContext) -> None:
    labels = handler.loaded.caps.labels
    assert labels is not None
    [body] = call(handler, ctx, [_row(class_name=labels[2], steps=40, request_id="v")])
    got = _answer(body)
    assert not got.error.code and got.request_id == "v"
    assert got.steps == 40 and got.stopped == "steps"
    scores = list(got.scores)
    assert all(b >= a for a, b in itertools.pairwise(scores)) and scores[-1] > scores[0] + 5
    image = as_array(got.image)
    assert image.shape == (3, 64, 64) and image.min() >= 0.0 and image.max() <= 1.0
    assert got.predictions[0].class_id == 2 and got.predictions[0].label == labels[2]
    # continuing from the answer starts where it stopped
    init = explain_pb2.Tensor(shape=[3, 64, 64], encoding=explain_pb2.FLOAT32, data=image.astype("<f4").tobytes())
    [more] = call(handler, ctx, [_row(class_id=2, steps=10, init=init)])
    assert _answer(more).scores[0] == pytest.approx(scores[-1], rel=1e-3)


def test_a_channel_and_explanations_in_the_same_batch(handler: ClassifierHandler, ctx: MockContext) -> None:
    explain = request([png_bytes(seed=3)], methods=["gradcam"])
    channel = explain_pb2.LayerChannel(layer="layer2", channel=1)
    out = call(handler, ctx, [grpc_row(explain), _row(channel=channel, steps=10, seed=4)])
    assert response(out[0]).results[0].maps
    got = _answer(out[1])
    assert not got.error.code and got.scores[-1] >= got.scores[0]


def test_the_wall_time_budget_and_the_callers_deadline(handler: ClassifierHandler, ctx: MockContext) -> None:
    start = time.monotonic()
    [body] = call(handler, ctx, [_row(class_id=1, steps=200, deadline_ms=150)])
    got = _answer(body)
    assert got.stopped == "deadline" and got.steps < 200 and got.elapsed_ms < 150 + 200
    deadline = str((time.time() + 0.3) * 1000)
    [body] = call(handler, ctx, [{**_row(class_id=1, steps=200), DEADLINE_KEY: deadline}])
    assert _answer(body).stopped == "deadline"
    assert time.monotonic() - start < 3.0


@pytest.mark.parametrize(
    ("row", "code", "field"),
    [
        (_row(class_id=1, steps=201), "RESOURCE_EXHAUSTED", "steps"),
        (_row(class_id=1, deadline_ms=MAX_MS + 1), "RESOURCE_EXHAUSTED", "deadline_ms"),
        (_row(), "INVALID_ARGUMENT", "objective"),
        (_row(class_id=99), "INVALID_ARGUMENT", "class_id"),
        (_row(class_name="dragon"), "NOT_FOUND", "class_name"),
        (_row(channel=explain_pb2.LayerChannel(layer="nope")), "NOT_FOUND", "channel.layer"),
        (
            _row(channel=explain_pb2.LayerChannel(layer="layer2", channel=999), steps=1),
            "INVALID_ARGUMENT",
            "channel.channel",
        ),
        (_row(class_id=1, learning_rate=-1.0), "INVALID_ARGUMENT", "learning_rate"),
        (_row(class_id=1, l2_decay=1.0), "INVALID_ARGUMENT", "l2_decay"),
        (_row(class_id=1, blur_sigma=float("nan")), "INVALID_ARGUMENT", "blur_sigma"),
        (
            _row(class_id=1, init=explain_pb2.Tensor(shape=[3, 8, 8], encoding=explain_pb2.FLOAT32)),
            "INVALID_ARGUMENT",
            "init",
        ),
        ({"visualize": b"\xff\xff"}, "INVALID_ARGUMENT", "visualize"),
        ({**_row(class_id=1), DEADLINE_KEY: str(time.time() * 1000 - 5000)}, "DEADLINE_EXCEEDED", ""),
    ],
)
def test_bad_requests_are_answered_in_band(
    handler: ClassifierHandler, ctx: MockContext, row: dict[str, Any], code: str, field: str
) -> None:
    [body] = call(handler, ctx, [row])
    got = _answer(body)
    assert (got.error.code, got.error.field) == (code, field), got.error.message
    assert not got.HasField("image") and np.size(got.scores) == 0
