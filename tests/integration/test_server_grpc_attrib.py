"""Integrated Gradients, SmoothGrad and Score-CAM through a real TorchServe over gRPC: the options reach the
engine, the maps equal the in-process engine's, the completeness error travels, describe states the costs, and a
bad option is answered INVALID_ARGUMENT naming it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from server_grpc_helpers import CLASSIFIER, Caller, as_array, describe, engine_inputs, png, request, shapes

from handlers.engine import MapKey, MethodParams

METHODS = ("integrated_gradients", "smoothgrad_saliency", "scorecam")


def test_methods_and_costs_are_described(caller: Caller) -> None:
    info = describe(caller, CLASSIFIER)
    assert set(METHODS) <= set(info.methods)
    costs = {m.name: m for m in info.method_info}
    assert list(costs["integrated_gradients"].per) == ["steps"] and costs["integrated_gradients"].bounds["steps"] > 0
    assert list(costs["scorecam"].per) == ["channels"]


def test_served_attributions_equal_the_engine(caller: Caller, engine: Any) -> None:
    images = shapes(2, start=40)
    options = explain_pb2.MethodOptions(steps=12, baseline="blurred", samples=3, noise=0.1, seed=4)
    msg = request([png(im) for im in images], methods=list(METHODS), options=options)
    msg.output.encoding = explain_pb2.FLOAT32
    response = caller.explain(msg)
    assert not response.HasField("error"), response.error
    params = MethodParams(steps=12, baseline="blurred", samples=3, noise=0.1, seed=4)
    local = engine.explain(engine_inputs(images), methods=METHODS, options=params)
    for served, mine in zip(response.results, local, strict=True):
        assert len(served.maps) == len(mine.maps) == 3
        for m in served.maps:
            key = MapKey(m.method, m.layer, m.target)
            expected = mine.maps[key].cpu().numpy()
            got = as_array(m.data)
            scale = max(float(np.abs(expected).max()), 1e-12)
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale, err_msg=m.method)
            if m.method == "integrated_gradients":
                assert m.completeness_error == pytest.approx(mine.completeness_errors[key], rel=1e-3, abs=1e-6)
            else:
                assert not m.HasField("completeness_error")


def test_a_bad_option_is_invalid_argument(caller: Caller) -> None:
    msg = request([png(shapes(1)[0])], methods=["integrated_gradients"], options=explain_pb2.MethodOptions(steps=0))
    response = caller.explain(msg)
    assert (response.error.code, response.error.field) == ("INVALID_ARGUMENT", "options.steps")
