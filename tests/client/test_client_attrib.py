"""The method options of explain (Integrated Gradients, SmoothGrad), the completeness error read back, the methods'
costs from describe, and the gallery caption, against the in-process fake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import camserve
import numpy as np
import pytest
from camserve import gallery
from camserve_proto.camserve.v1 import explain_pb2
from conftest import FakeServer, default_answer
from test_client_render import result

MODEL = "shapes-classifier"
IMAGE = np.zeros((8, 8, 3), np.uint8)


def test_method_options_are_sent(client: camserve.Client, fake: FakeServer) -> None:
    client.explain(
        IMAGE, model=MODEL, methods="saliency", steps=64, rule="riemann_middle", baseline="blurred",
        samples=8, noise=0.0, seed=7,
    )  # fmt: skip
    options = fake.requests[-1].options
    assert options.HasField("steps") and options.steps == 64
    assert (options.rule, options.baseline, options.samples, options.seed) == ("riemann_middle", "blurred", 8, 7)
    assert options.HasField("noise") and options.noise == 0.0  # zero noise is sent, not dropped


def test_no_method_options_sends_none(client: camserve.Client, fake: FakeServer) -> None:
    client.explain(IMAGE, model=MODEL)
    assert not fake.requests[-1].HasField("options")
    list(client.explain_many([IMAGE], model=MODEL, samples=3))
    assert fake.requests[-1].options.samples == 3 and not fake.requests[-1].options.HasField("steps")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"samples": -1}, "samples"),
        ({"noise": -0.5}, "noise"),
        ({"noise": float("inf")}, "noise"),
        ({"seed": -3}, "seed"),
        ({"rule": ""}, "rule"),
        ({"baseline": 3}, "baseline"),
    ],
)
def test_bad_method_options_raise_before_sending(
    client: camserve.Client, fake: FakeServer, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(camserve.InvalidArgument) as info:
        client.explain(IMAGE, model=MODEL, **kwargs)
    assert info.value.field == field
    assert fake.calls == 0


def test_completeness_error_is_read_back(client: camserve.Client, fake: FakeServer) -> None:
    def answer(request: explain_pb2.ExplainRequest, model: str, _context: object) -> explain_pb2.ExplainResponse:
        response = default_answer(request, model)
        response.results[0].maps[0].completeness_error = 0.0125
        return response

    fake.answer = answer
    result = client.explain(IMAGE, model=MODEL, methods=["gradcam", "saliency"])
    first, *others = result.maps.values()
    assert first.completeness_error == pytest.approx(0.0125)
    assert all(m.completeness_error is None for m in others)
    assert first.upsample((4, 4)).completeness_error == pytest.approx(0.0125)


def test_describe_reads_method_costs(client: camserve.Client, fake: FakeServer) -> None:
    def answer(request: explain_pb2.ExplainRequest, model: str, _context: object) -> explain_pb2.ExplainResponse:
        response = default_answer(request, model)
        ig = response.model_info.method_info.add(name="integrated_gradients", forwards=1, backwards=1, fixed_forwards=1)
        ig.per.append("steps")
        ig.bounds.update({"steps": 256, "passes": 4096})
        response.model_info.method_info.add(name="gradcam", backwards=1).bounds["passes"] = 4096
        return response

    fake.answer = answer
    info = client.describe(MODEL)
    ig = info.method_costs["integrated_gradients"]
    assert (ig.forwards, ig.backwards, ig.per, ig.fixed_forwards) == (1, 1, ("steps",), 1)
    assert dict(ig.bounds) == {"steps": 256, "passes": 4096}
    assert ig.passes(targets=2, steps=50) == 1 + 50 + 100
    assert info.method_costs["gradcam"].passes(targets=3) == 3
    with pytest.raises(camserve.InvalidArgument) as err:
        ig.passes()
    assert err.value.field == "steps"


def test_describe_without_costs_is_empty(client: camserve.Client) -> None:
    assert dict(client.describe(MODEL).method_costs) == {}


def test_gallery_caption_shows_the_completeness_error(tmp_path: Path) -> None:
    grad = np.random.default_rng(0).normal(size=(3, 16, 16)).astype(np.float32)
    maps = [camserve.Map("integrated_gradients", "", 3, grad, 0.0234), camserve.Map("saliency", "", 3, grad)]
    index = gallery.write([gallery.Entry("x.png", np.zeros((16, 16, 3), np.uint8), result(maps))], tmp_path)
    text = index.read_text()
    assert "integrated_gradients · 3x16x16 · completeness error 0.0234" in text
    assert "saliency · 3x16x16<" in text or "saliency · 3x16x16'" in text
