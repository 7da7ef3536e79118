"""Feature maps: the top channels of a layer, equal to the module's own forward output, from the prediction's pass."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from handlers.engine import (
    NO_TARGET,
    Explainer,
    FeatureMapSpec,
    InvalidArgumentError,
    NotFoundError,
)

from .conftest import Snapshot


def _forward_outputs(model: nn.Module, x: Tensor, names: tuple[str, ...]) -> tuple[dict[str, Tensor], Tensor]:
    """The named modules' outputs and the logits of one plain eval forward, recorded by our own hooks."""
    modules = dict(model.named_modules())
    seen: dict[str, Tensor] = {}
    handles = [
        modules[n].register_forward_hook(lambda _m, _a, out, n=n: seen.__setitem__(n, out.detach().clone()))
        for n in names
    ]
    try:
        with torch.no_grad():
            logits = model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return seen, logits


def test_mean_ranked_maps_equal_the_module_output(resnet18: nn.Module, images: Tensor) -> None:
    model = copy.deepcopy(resnet18)
    outputs, logits = _forward_outputs(model, images, ("layer3", "layer4"))
    before = Snapshot.of(model)
    results = Explainer(model).explain(
        images, methods=("gradcam",), feature_maps=FeatureMapSpec(layers=("layer3", "layer4"), top_n=5)
    )
    before.assert_same(model)
    for i, result in enumerate(results):
        assert [f.layer for f in result.feature_maps] == ["layer3"] * 5 + ["layer4"] * 5
        for layer in ("layer3", "layer4"):
            out = outputs[layer][i]
            maps = [f for f in result.feature_maps if f.layer == layer]
            means = out.mean(dim=(1, 2))
            assert [f.channel for f in maps] == means.topk(5).indices.tolist()
            for f in maps:
                assert f.target == NO_TARGET
                assert torch.equal(f.values, out[f.channel]), (layer, f.channel)  # native resolution, exact
                assert f.score == pytest.approx(float(means[f.channel]), rel=1e-6)
        # the same forward made the prediction
        assert result.predictions[0].class_id == int(logits[i].argmax())


def test_gradcam_ranked_channels_are_the_largest_gradcam_weights(resnet18: nn.Module, images: Tensor) -> None:
    model = copy.deepcopy(resnet18).eval()
    captured: dict[str, Tensor] = {}

    def keep(_m: nn.Module, _a: object, out: Tensor) -> None:
        out.retain_grad()
        captured["a"] = out

    handle = model.layer4.register_forward_hook(keep)
    try:
        logits = model(images)
    finally:
        handle.remove()
    top2 = logits.topk(2, dim=1).indices
    results = Explainer(model).explain(
        images, methods=(), layers="layer4", top_k=2, feature_maps=FeatureMapSpec(top_n=4, rank="gradcam")
    )
    for i, result in enumerate(results):
        assert result.targets == tuple(top2[i].tolist())
        assert [f.target for f in result.feature_maps] == [result.targets[0]] * 4 + [result.targets[1]] * 4
        for j, target in enumerate(result.targets):
            (grad,) = torch.autograd.grad(logits[i, target], captured["a"], retain_graph=True)
            weights = grad[i].mean(dim=(1, 2))
            chosen = result.feature_maps[4 * j : 4 * j + 4]
            assert [f.channel for f in chosen] == weights.topk(4).indices.tolist()
            for f in chosen:
                assert f.score == pytest.approx(float(weights[f.channel]), rel=1e-4, abs=1e-9)
                torch.testing.assert_close(f.values, captured["a"][i, f.channel].detach(), rtol=0, atol=0)


def test_feature_layers_default_to_the_call_layers_and_cap_at_the_channel_count(resnet18: nn.Module) -> None:
    ex = Explainer(copy.deepcopy(resnet18), input_size=(64, 64))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    [r] = ex.explain(x, methods=("gradcam",), layers=("layer1",), feature_maps=FeatureMapSpec(top_n=500))
    assert {f.layer for f in r.feature_maps} == {"layer1"}
    assert len(r.feature_maps) == 64  # layer1 has 64 channels
    [r] = ex.explain(x, methods=(), feature_maps=FeatureMapSpec(top_n=1))
    assert [f.layer for f in r.feature_maps] == list(ex.default_layers)
    [plain] = ex.explain(x, methods=("gradcam",))
    assert plain.feature_maps == ()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"top_n": 0}, "feature_maps.top_n"),
        ({"top_n": True}, "feature_maps.top_n"),
        ({"top_n": 2.5}, "feature_maps.top_n"),
        ({"rank": "max"}, "feature_maps.rank"),
        ({"layers": ()}, "feature_maps.layers"),
    ],
)
def test_bad_feature_map_specs_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        FeatureMapSpec(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_unknown_or_unusable_feature_layers_are_refused(resnet18: nn.Module, images: Tensor) -> None:
    ex = Explainer(copy.deepcopy(resnet18))
    with pytest.raises(NotFoundError):
        ex.explain(images, methods=(), feature_maps=FeatureMapSpec(layers=("layer9",)))
    with pytest.raises(InvalidArgumentError) as info:
        ex.explain(images, methods=(), feature_maps=FeatureMapSpec(layers=("fc",)))
    assert info.value.field == "layers"
    with pytest.raises(InvalidArgumentError) as info:
        ex.explain(images, methods=(), feature_maps={"top_n": 3})  # type: ignore[arg-type]
    assert info.value.field == "feature_maps"
