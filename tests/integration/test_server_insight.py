"""Feature maps and consistency checks from a real TorchServe over gRPC, against the engine run in this process.

The demo images are sent at the model's input size as PNG, so the worker sees them bit-exact and its answers can be
compared number for number with :class:`handlers.engine.Explainer` on the same weights.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from server_grpc_helpers import CLASSIFIER, VAE, Caller, as_array, describe, engine_inputs, png, request, shapes

from handlers.engine import ConsistencySpec, FeatureMapSpec

pytestmark = pytest.mark.integration

_TRANSFORMS = {
    explain_pb2.TRANSFORM_HFLIP: "hflip",
    explain_pb2.TRANSFORM_SHIFT: "shift",
    explain_pb2.TRANSFORM_ROTATE: "rotate",
}


def test_served_feature_maps_equal_the_engines(caller: Caller, engine: Any) -> None:
    info = describe(caller, CLASSIFIER)
    layers = (info.layers[list(info.layers).index(info.default_layers[0]) - 1], info.default_layers[0])
    images = shapes(2, start=40)
    msg = request([png(im) for im in images], methods=["gradcam"], request_id="features")
    msg.feature_maps.CopyFrom(
        explain_pb2.FeatureMapOptions(layers=list(layers), top_n=4, ranking=explain_pb2.CHANNEL_RANKING_GRADCAM_WEIGHT)
    )
    msg.target.top_k = 2
    msg.output.encoding = explain_pb2.FLOAT32
    response = caller.explain(msg)
    assert not response.HasField("error"), response.error
    spec = FeatureMapSpec(layers=layers, top_n=4, rank="gradcam")
    local = engine.explain(engine_inputs(images), methods=("gradcam",), top_k=2, feature_maps=spec)
    for served, mine in zip(response.results, local, strict=True):
        assert len(served.feature_maps) == 2 * 2 * 4  # layers x targets x top_n
        assert [(f.layer, f.channel, f.target) for f in served.feature_maps] == [
            (f.layer, f.channel, f.target) for f in mine.feature_maps
        ]
        for got, want in zip(served.feature_maps, mine.feature_maps, strict=True):
            assert got.score == pytest.approx(want.score, rel=1e-3, abs=1e-7)
            np.testing.assert_allclose(as_array(got.data), want.values.numpy(), rtol=1e-4, atol=1e-5)


def test_served_consistency_equals_the_engines(caller: Caller, engine: Any) -> None:
    images = shapes(2, start=50)
    msg = request([png(im) for im in images], methods=["gradcam", "saliency"], request_id="consistency")
    msg.consistency.CopyFrom(explain_pb2.ConsistencyOptions(shift=0.25, angle_degrees=-20))
    response = caller.explain(msg)
    assert not response.HasField("error"), response.error
    spec = ConsistencySpec(shift=0.25, angle=-20.0)
    local = engine.explain(engine_inputs(images), methods=("gradcam", "saliency"), consistency=spec)
    for served, mine in zip(response.results, local, strict=True):
        assert len(served.consistency) == len(served.maps) * 3
        want = {(a.key.method, a.key.layer, a.key.target, a.transform): a for a in mine.consistency}
        for a in served.consistency:
            w = want[(a.method, a.layer, a.target, _TRANSFORMS[a.transform])]
            for name in ("spearman", "iou"):
                value = getattr(w, name)
                if math.isnan(value):
                    assert math.isnan(getattr(a, name))
                else:
                    assert getattr(a, name) == pytest.approx(value, abs=2e-3)
            assert a.coverage == pytest.approx(w.coverage)
            assert tuple(a.mapped.shape) == (64, 64)
            np.testing.assert_allclose(
                as_array(a.mapped), w.mapped.numpy(), rtol=2e-3, atol=2e-3 * float(w.mapped.abs().max())
            )


def test_insight_on_a_vae_is_invalid(caller: Caller) -> None:
    msg = request([png(shapes(1)[0])])
    msg.feature_maps.top_n = 2
    err = caller.explain(msg, VAE).error
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "feature_maps")


def test_served_filters_equal_the_engines_through_the_gateway(caller: Caller, engine: Any) -> None:
    from handlers.engine import conv_layers, filters

    wanted = explain_pb2.FiltersRequest(layers=["stem.0", "layer3.conv2"], max_channels=12, request_id="f")
    reply = caller.raw(CLASSIFIER, {"filters": wanted.SerializeToString()})
    got = explain_pb2.FiltersResponse.FromString(reply.prediction)
    assert not got.error.code, got.error
    assert got.request_id == "f" and list(got.conv_layers) == list(conv_layers(engine.model))
    mine = filters(engine.model, ["stem.0", "layer3.conv2"], 12)
    for served, local in zip(got.filters, mine, strict=True):
        assert (served.layer, served.rgb, served.out_channels) == (local.layer, local.rgb, local.out_channels)
        np.testing.assert_array_equal(as_array(served.tiles), local.tiles.numpy())
        np.testing.assert_array_equal(as_array(served.connections), local.connections.numpy())
    bad = caller.raw(CLASSIFIER, {"filters": explain_pb2.FiltersRequest(layers=["fc"]).SerializeToString()})
    err = explain_pb2.FiltersResponse.FromString(bad.prediction).error
    assert (err.code, err.field) == ("INVALID_ARGUMENT", "layers[0]")


def test_served_activation_maximisation_of_the_demo_classifier(caller: Caller, engine: Any) -> None:
    target = 3
    asked = explain_pb2.VisualizeRequest(class_id=target, steps=60, seed=1, request_id="v")
    got = explain_pb2.VisualizeResponse.FromString(
        caller.raw(CLASSIFIER, {"visualize": asked.SerializeToString()}).prediction
    )
    assert not got.error.code, got.error
    scores = list(got.scores)
    assert all(b >= a for a, b in itertools.pairwise(scores)) and scores[-1] > scores[0] + 5
    assert got.predictions[0].class_id == target
    # 60 steps take well under the 2 s budget on a quiet machine; a loaded one may hit the deadline first
    assert (got.stopped == "steps" and got.steps == 60) or (got.stopped == "deadline" and 0 < got.steps < 60)
    assert got.elapsed_ms < 2000 + 500
    image = as_array(got.image)
    with torch.no_grad():  # the answer's pixels excite the class in the in-process model too
        logit = float(engine.model(torch.from_numpy(image)[None])[0, target])
    assert logit == pytest.approx(scores[-1], rel=1e-3, abs=1e-3)
    too_long = explain_pb2.VisualizeRequest(class_id=target, steps=100_000)
    err = explain_pb2.VisualizeResponse.FromString(
        caller.raw(CLASSIFIER, {"visualize": too_long.SerializeToString()}).prediction
    ).error
    assert (err.code, err.field) == ("RESOURCE_EXHAUSTED", "steps")
