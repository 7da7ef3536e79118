"""Feature maps and consistency checks on the wire: parsing and its errors, the handler's answers, sizing, REST.

The handler runs a real torchvision ResNet-18 with random weights at 64x64 (nothing downloads); its answers are
compared with the engine called in-process on the same preprocessed pixels.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import (
    GOOD,
    MockContext,
    as_array,
    call,
    classifier_caps,
    grpc_row,
    loaded_classifier,
    parse,
    png_bytes,
    request,
    response,
    vae_caps,
)
from test_serving_handler import MEAN, STD, config

from handlers.engine import ConsistencySpec, FeatureMapSpec
from handlers.engine.errors import CamserveError, InvalidArgumentError, NotFoundError, ResourceExhaustedError
from handlers.preprocess import Preprocessor
from handlers.serving._config import Limits
from handlers.serving._sizing import response_size_bound
from handlers.serving.classifier import ClassifierHandler


@pytest.fixture(scope="module")
def handler() -> ClassifierHandler:
    return loaded_classifier(config())


@pytest.fixture
def ctx() -> MockContext:
    return MockContext(config(), gpu_id=0)


def _pixels(image: bytes) -> torch.Tensor:
    import io

    from PIL import Image

    pre = Preprocessor((64, 64), 64, tuple(MEAN), tuple(STD))  # type: ignore[arg-type]
    pixels, _ = pre.from_pil(Image.open(io.BytesIO(image)))
    return pixels[None]


# ---- parsing


def test_feature_map_options_default_to_the_request_layers_then_the_model_defaults() -> None:
    msg = request([GOOD], methods=["gradcam"], layers=["layer3"])
    msg.feature_maps.SetInParent()
    assert parse(msg).insight.feature_maps == FeatureMapSpec(layers=("layer3",), top_n=8, rank="mean")
    msg = request([GOOD], methods=["saliency"])
    msg.feature_maps.top_n = 2
    msg.feature_maps.ranking = explain_pb2.CHANNEL_RANKING_GRADCAM_WEIGHT
    assert parse(msg).insight.feature_maps == FeatureMapSpec(layers=("layer4",), top_n=2, rank="gradcam")
    assert parse(request([GOOD])).insight.feature_maps is None


def test_consistency_options_take_defaults_for_zero_values() -> None:
    msg = request([GOOD])
    msg.consistency.SetInParent()
    insight = parse(msg).insight
    assert insight.consistency == ConsistencySpec() and insight.consistency_maps
    msg.consistency.transforms.append(explain_pb2.TRANSFORM_ROTATE)
    msg.consistency.angle_degrees = -30
    msg.consistency.omit_maps = True
    insight = parse(msg).insight
    assert insight.consistency == ConsistencySpec(transforms=("rotate",), angle=-30.0)
    assert not insight.consistency_maps


def _feature(**fields: Any) -> explain_pb2.ExplainRequest:
    msg = request([GOOD])
    msg.feature_maps.CopyFrom(explain_pb2.FeatureMapOptions(**fields))
    return msg


def _consistency(images: int = 1, **fields: Any) -> explain_pb2.ExplainRequest:
    msg = request([GOOD] * images)
    msg.consistency.CopyFrom(explain_pb2.ConsistencyOptions(**fields))
    return msg


@pytest.mark.parametrize(
    ("msg", "error", "field"),
    [
        (_feature(layers=["layer4", "nope"]), NotFoundError, "feature_maps.layers[1]"),
        (_feature(ranking=7), InvalidArgumentError, "feature_maps.ranking"),
        (_feature(top_n=300), ResourceExhaustedError, "feature_maps.top_n"),
        (_consistency(transforms=[0]), InvalidArgumentError, "consistency.transforms[0]"),
        (_consistency(transforms=[1, 9]), InvalidArgumentError, "consistency.transforms[1]"),
        (_consistency(transforms=[1, 1]), InvalidArgumentError, "consistency.transforms"),
        (_consistency(shift=0.75), InvalidArgumentError, "consistency.shift"),
        (_consistency(shift=float("nan")), InvalidArgumentError, "consistency.shift"),
        (_consistency(angle_degrees=100), InvalidArgumentError, "consistency.angle_degrees"),
        (_consistency(top_fraction=1.5), InvalidArgumentError, "consistency.top_fraction"),
        (_consistency(top_fraction=-0.1), InvalidArgumentError, "consistency.top_fraction"),
        (_consistency(images=2), ResourceExhaustedError, "consistency"),  # 2 x (1 + 3) copies > 4 images
    ],
)
def test_bad_options_are_refused_naming_their_field(
    msg: explain_pb2.ExplainRequest, error: type[CamserveError], field: str
) -> None:
    with pytest.raises(error) as info:
        parse(msg)
    assert info.value.field == field


def test_gradcam_ranked_feature_maps_count_every_target_against_the_limit() -> None:
    caps = classifier_caps(limits=Limits(max_images=4, max_top_k=4, max_feature_maps=16))
    msg = _feature(top_n=8, ranking=explain_pb2.CHANNEL_RANKING_GRADCAM_WEIGHT)
    parse(msg, caps)  # 8 maps for the top-1 target
    msg.target.top_k = 3
    with pytest.raises(ResourceExhaustedError, match="24 feature maps"):
        parse(msg, caps)


@pytest.mark.parametrize("option", ["feature_maps", "consistency"])
def test_vae_requests_cannot_ask_for_classifier_insight(option: str) -> None:
    msg = request([GOOD])
    getattr(msg, option).SetInParent()
    with pytest.raises(InvalidArgumentError) as info:
        parse(msg, vae_caps())
    assert info.value.field == option


def test_the_response_bound_counts_feature_maps_and_mapped_back_maps() -> None:
    plain = request([GOOD], methods=["gradcam"])
    base = response_size_bound(parse(plain), classifier_caps())
    with_features = _feature(top_n=8)
    with_features.methods.append("gradcam")
    assert response_size_bound(parse(with_features), classifier_caps()) >= base + 8 * (2 * 2 * 2)
    checked = _consistency()
    checked.methods.append("gradcam")
    with_maps = response_size_bound(parse(checked), classifier_caps())
    assert with_maps >= base + 3 * (8 * 8 * 2)  # three [8, 8] float16 maps
    checked.consistency.omit_maps = True
    assert base < response_size_bound(parse(checked), classifier_caps()) < with_maps


# ---- the handler


def test_feature_maps_are_served_as_the_engine_computes_them(handler: ClassifierHandler, ctx: MockContext) -> None:
    image = png_bytes(64, 64, seed=11)
    msg = request([image], methods=["gradcam"], layers=["layer3"], request_id="fm")
    msg.feature_maps.CopyFrom(explain_pb2.FeatureMapOptions(layers=["layer3", "layer4"], top_n=3))
    msg.output.encoding = explain_pb2.FLOAT32
    [body] = call(handler, ctx, [grpc_row(msg)])
    [result] = response(body).results
    assert not result.error.code
    spec = FeatureMapSpec(layers=("layer3", "layer4"), top_n=3)
    [expected] = handler.explainer.explain(_pixels(image), ("gradcam",), ("layer3",), feature_maps=spec)
    assert [(f.layer, f.channel, f.target) for f in result.feature_maps] == [
        (f.layer, f.channel, f.target) for f in expected.feature_maps
    ]
    for got, want in zip(result.feature_maps, expected.feature_maps, strict=True):
        assert got.score == pytest.approx(want.score, rel=1e-5)
        np.testing.assert_allclose(as_array(got.data), want.values.numpy(), rtol=1e-5, atol=1e-6)
    assert [tuple(f.data.shape) for f in result.feature_maps] == [(4, 4)] * 3 + [(2, 2)] * 3
    assert len(result.maps) == 1  # the maps are still there


def test_consistency_numbers_and_maps_come_in_one_answer(handler: ClassifierHandler, ctx: MockContext) -> None:
    image = png_bytes(64, 64, seed=12)
    checked = request([image], methods=["gradcam", "saliency"], request_id="c")
    checked.consistency.SetInParent()
    plain = request([png_bytes(64, 64, seed=13)], methods=["gradcam", "saliency"], request_id="p")
    numbers_only = request([image], methods=["gradcam"], request_id="n")
    numbers_only.consistency.CopyFrom(explain_pb2.ConsistencyOptions(transforms=[1], omit_maps=True))
    out = call(handler, ctx, [grpc_row(checked), grpc_row(plain), grpc_row(numbers_only)])
    [result] = response(out[0]).results
    [expected] = handler.explainer.explain(_pixels(image), ("gradcam", "saliency"), consistency=ConsistencySpec())
    transforms = [explain_pb2.TRANSFORM_HFLIP, explain_pb2.TRANSFORM_SHIFT, explain_pb2.TRANSFORM_ROTATE]
    order = [(m.method, m.layer, m.target) for m in result.maps]
    assert [(a.method, a.layer, a.target) for a in result.consistency] == [k for k in order for _ in transforms]
    assert [a.transform for a in result.consistency] == transforms * len(order)
    want = {(a.key.method, a.transform): a for a in expected.consistency}
    names = {explain_pb2.TRANSFORM_HFLIP: "hflip", explain_pb2.TRANSFORM_SHIFT: "shift"}
    names[explain_pb2.TRANSFORM_ROTATE] = "rotate"
    for a in result.consistency:
        w = want[(a.method, names[a.transform])]
        for name in ("spearman", "iou", "coverage"):
            value = getattr(w, name)
            assert math.isnan(getattr(a, name)) if math.isnan(value) else getattr(a, name) == pytest.approx(value)
        assert tuple(a.mapped.shape) == (64, 64)
    [other] = response(out[1]).results
    assert not other.consistency and not other.feature_maps  # grouped apart, nothing added
    [numbers] = response(out[2]).results
    assert [a.transform for a in numbers.consistency] == [explain_pb2.TRANSFORM_HFLIP]
    assert not numbers.consistency[0].HasField("mapped")


def test_consistency_over_the_response_budget_is_refused_before_any_work(
    handler: ClassifierHandler, ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(handler, "explain_group", lambda *a: calls.append(a) or [])
    msg = request([png_bytes(seed=14)] * 2, methods=["gradcam", "saliency"], request_id="big")
    msg.target.top_k = 10
    msg.output.encoding = explain_pb2.FLOAT32
    msg.consistency.CopyFrom(explain_pb2.ConsistencyOptions(transforms=[1, 2, 3]))
    [body] = call(handler, ctx, [grpc_row(msg)])
    err = response(body).error
    assert (err.code, err.field) == ("RESOURCE_EXHAUSTED", "output")
    assert calls == []


def test_rest_form_fields_ask_for_feature_maps_and_consistency(handler: ClassifierHandler, ctx: MockContext) -> None:
    rows = [{"body": png_bytes(seed=15), "methods": b"gradcam", "feature_maps": "2", "consistency": "hflip,shift"}]
    [body] = call(handler, ctx, rows, headers=[{"body": {"content-type": "image/png"}}])
    doc = json.loads(body)
    assert ctx.request_processor[0].status[0] == 200
    assert [(f["layer"], f["target"]) for f in doc["feature_maps"]] == [("layer4", -1)] * 2
    assert doc["feature_maps"][0]["shape"] == [2, 2] and "values" in doc["feature_maps"][0]
    assert [c["transform"] for c in doc["consistency"]] == ["hflip", "shift"]
    for c in doc["consistency"]:
        assert c["spearman"] is None or -1.0 <= c["spearman"] <= 1.0
        assert "png" in c


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"feature_maps": "zero"}, "feature_maps"),
        ({"feature_maps": "0"}, "feature_maps"),
        ({"consistency": "zoom"}, "consistency"),
    ],
)
def test_bad_rest_insight_fields_are_400s(
    handler: ClassifierHandler, ctx: MockContext, fields: dict[str, str], field: str
) -> None:
    [body] = call(
        handler, ctx, [{"body": png_bytes(seed=16), **fields}], headers=[{"body": {"content-type": "image/png"}}]
    )
    err = json.loads(body)["error"]
    assert (err["code"], err["field"]) == ("INVALID_ARGUMENT", field)
    assert ctx.request_processor[0].status[0] == 400
