"""Integrated Gradients, SmoothGrad and Score-CAM through the classifier handler: options over gRPC and REST, the
completeness error on the wire, the methods' costs in describe, bad options, and the work budget refused before
the engine runs. The model is torchvision's ResNet-18 with random weights at 64x64 (as in test_serving_handler.py).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from PIL import Image
from serving_helpers import (
    LIMITS,
    MockContext,
    call,
    decoded_maps,
    grpc_row,
    loaded_classifier,
    png_bytes,
    request,
    response,
)
from test_serving_handler import MEAN, STD
from test_serving_handler import config as handler_config

from handlers.engine import Explainer, MethodParams
from handlers.serving._config import Limits, parse_config
from handlers.serving._options import parse_options
from handlers.serving.classifier import ClassifierHandler

LIMITS_SECTION = {"max_steps": 64, "max_samples": 8, "max_channels": 256, "max_passes": 3000}


def config() -> dict[str, Any]:
    return handler_config(default_methods=[], limits={"max_images": 4, **LIMITS_SECTION})


@pytest.fixture(scope="module")
def handler() -> ClassifierHandler:
    return loaded_classifier(config())


@pytest.fixture
def ctx() -> MockContext:
    return MockContext(config(), gpu_id=0)


def _one(handler: ClassifierHandler, ctx: MockContext, msg: explain_pb2.ExplainRequest) -> explain_pb2.ExplainResponse:
    [body] = call(handler, ctx, [grpc_row(msg)])
    return response(body)


def test_limits_are_configurable() -> None:
    limits = parse_config(config()).limits
    assert (limits.max_steps, limits.max_samples, limits.max_channels, limits.max_passes) == (64, 8, 256, 3000)


def test_describe_lists_the_methods_and_their_costs(handler: ClassifierHandler, ctx: MockContext) -> None:
    info = _one(handler, ctx, explain_pb2.ExplainRequest(describe=True)).model_info
    names = ("integrated_gradients", "smoothgrad_saliency", "smoothgrad_guided_backprop", "scorecam")
    assert set(names) <= set(info.methods)
    costs = {m.name: m for m in info.method_info}
    assert list(costs) == list(info.methods)
    ig = costs["integrated_gradients"]
    assert (ig.forwards, ig.backwards, list(ig.per), ig.fixed_forwards) == (1, 1, ["steps"], 1)
    assert dict(ig.bounds) == {"steps": 64, "passes": 3000}
    assert dict(costs["smoothgrad_integrated_gradients"].bounds) == {"samples": 8, "steps": 64, "passes": 3000}
    assert dict(costs["scorecam"].bounds) == {"channels": 256, "passes": 3000}
    assert (costs["gradcam"].backwards, list(costs["gradcam"].per)) == (1, [])


def test_integrated_gradients_over_grpc_with_its_completeness_error(
    handler: ClassifierHandler, ctx: MockContext
) -> None:
    options = explain_pb2.MethodOptions(steps=16, rule="riemann_middle", baseline="black")
    msg = request([png_bytes(64, 64)], methods=["integrated_gradients", "saliency"], options=options)
    msg.output.encoding = explain_pb2.FLOAT32
    [result] = _one(handler, ctx, msg).results
    by_method = {m.method: m for m in result.maps}
    assert by_method["integrated_gradients"].HasField("completeness_error")
    assert not by_method["saliency"].HasField("completeness_error")
    # the same as the engine on the same pixels, with the black of the model's normalisation as the baseline
    pre = handler.loaded.preprocessor
    pixels, _ = pre.from_pil(Image.open(io.BytesIO(png_bytes(64, 64))).convert("RGB"))
    black = [-m / s for m, s in zip(MEAN, STD, strict=True)]
    params = MethodParams(steps=16, rule="riemann_middle", max_channels=256)
    [mine] = Explainer(handler.loaded.model, black=black).explain(
        pixels[None], methods=["integrated_gradients"], options=params
    )
    key = mine.key("integrated_gradients")
    got = decoded_maps(result)[("integrated_gradients", "", key.target)]
    np.testing.assert_allclose(got, mine.maps[key].numpy(), rtol=1e-4, atol=1e-6 * float(np.abs(got).max()))
    assert by_method["integrated_gradients"].completeness_error == pytest.approx(
        mine.completeness_errors[key], rel=1e-4
    )


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"steps": 0}, "options.steps"),
        ({"steps": 65}, "options.steps"),
        ({"steps": 2**32 - 1}, "options.steps"),
        ({"steps": 1, "rule": "riemann_left"}, "options.steps"),
        ({"rule": "simpson"}, "options.rule"),
        ({"baseline": "white"}, "options.baseline"),
        ({"samples": 0}, "options.samples"),
        ({"samples": 9}, "options.samples"),
        ({"noise": -0.1}, "options.noise"),
        ({"noise": math.nan}, "options.noise"),
        ({"noise": math.inf}, "options.noise"),
        ({"seed": 2**63}, "options.seed"),
    ],
)
def test_bad_options_are_invalid_argument_naming_the_field(
    handler: ClassifierHandler, ctx: MockContext, options: dict[str, Any], field: str
) -> None:
    msg = request([png_bytes()], methods=["integrated_gradients"], options=explain_pb2.MethodOptions(**options))
    answer = _one(handler, ctx, msg)
    assert (answer.error.code, answer.error.field) == ("INVALID_ARGUMENT", field), answer.error.message
    assert not answer.results


def test_work_over_the_budget_is_refused_before_it_starts(
    handler: ClassifierHandler, ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the engine ran")

    monkeypatch.setattr(handler.explainer, "explain", never)
    # 4 images x top-3 x (1 + 64 forwards + 64 x 3 backwards) = 4 x 257 = 1028 passes per method; x3 methods > 3000
    msg = request(
        [png_bytes(seed=i) for i in range(4)],
        methods=["integrated_gradients", "smoothgrad_integrated_gradients"],
        options=explain_pb2.MethodOptions(steps=64, samples=2),
        target=explain_pb2.Target(top_k=3),
    )
    answer = _one(handler, ctx, msg)
    assert (answer.error.code, answer.error.field) == ("RESOURCE_EXHAUSTED", "options")
    assert "3000" in answer.error.message
    # Score-CAM on a layer with more channels than the model's bound (layer4: 512 > 256)
    msg = request([png_bytes()], methods=["scorecam"], layers=["layer3", "layer4"])
    answer = _one(handler, ctx, msg)
    assert (answer.error.code, answer.error.field) == ("RESOURCE_EXHAUSTED", "layers[1]")


def test_scorecam_and_smoothgrad_run_within_bounds(handler: ClassifierHandler, ctx: MockContext) -> None:
    msg = request(
        [png_bytes(), png_bytes(seed=3)],
        methods=["scorecam", "smoothgrad_saliency", "smoothgrad_guided_backprop"],
        layers=["layer3"],
        options=explain_pb2.MethodOptions(samples=4, noise=0.1, seed=5),
    )
    answer = _one(handler, ctx, msg)
    assert not answer.HasField("error"), answer.error
    for result in answer.results:
        maps = decoded_maps(result)
        target = result.predictions[0].class_id
        assert maps[("scorecam", "layer3", target)].shape == (4, 4)
        assert maps[("smoothgrad_saliency", "", target)].shape == (3, 64, 64)
        assert all(np.isfinite(v).all() and np.abs(v).max() > 0 for v in maps.values())


def test_requests_with_different_options_are_not_batched_together(handler: ClassifierHandler, ctx: MockContext) -> None:
    def msg(seed: int) -> explain_pb2.ExplainRequest:
        return request(
            [png_bytes()], methods=["smoothgrad_saliency"], options=explain_pb2.MethodOptions(samples=2, seed=seed)
        )

    together = [response(b) for b in call(handler, ctx, [grpc_row(msg(1)), grpc_row(msg(2))])]
    alone = [_one(handler, ctx, msg(s)) for s in (1, 2)]
    for a, b in zip(together, alone, strict=True):
        for key, value in decoded_maps(a.results[0]).items():
            np.testing.assert_array_equal(value, decoded_maps(b.results[0])[key])
    first, second = (decoded_maps(r.results[0]) for r in together)
    assert any(not np.array_equal(first[k], second[k]) for k in first)  # the seeds did differ


def test_rest_form_fields_carry_the_options(handler: ClassifierHandler, ctx: MockContext) -> None:
    rows = [
        {"body": png_bytes(), "methods": "integrated_gradients", "steps": "8", "baseline": "blurred", "seed": "3"},
        {"body": png_bytes(), "methods": "integrated_gradients", "steps": "many"},
        {"body": png_bytes(), "methods": "smoothgrad_saliency", "noise": "-1"},
    ]
    headers = [{"body": {"content-type": "image/png"}}] * 3
    ok, bad_steps, bad_noise = (json.loads(b) for b in call(handler, ctx, rows, headers=headers))
    [entry] = ok["maps"]
    assert entry["method"] == "integrated_gradients" and entry["completeness_error"] >= 0
    assert (bad_steps["error"]["code"], bad_steps["error"]["field"]) == ("INVALID_ARGUMENT", "options.steps")
    assert (bad_noise["error"]["code"], bad_noise["error"]["field"]) == ("INVALID_ARGUMENT", "options.noise")
    assert [p.status[0] for p in ctx.request_processor] == [200, 400, 400]


def test_unset_options_take_the_defaults_within_the_bounds() -> None:
    assert parse_options(None, Limits()) == MethodParams(max_channels=Limits().max_channels)
    small = parse_options(None, LIMITS.__class__(max_steps=10, max_samples=4))
    assert (small.steps, small.samples) == (10, 4)
    given = parse_options(explain_pb2.MethodOptions(noise=0.0, seed=9), Limits())
    assert (given.noise, given.seed, given.steps) == (0.0, 9, 50)
