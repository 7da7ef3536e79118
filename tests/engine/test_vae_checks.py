"""VAE explainer checks on a tiny VAE with seeded weights: bad regions and arguments raise errors naming the field,
the model is left as found, out-of-memory splits keep each image's sample, and the result types and layers.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import Saliency
from torch import Tensor, nn

from handlers.engine import (
    Box,
    Explanation,
    InvalidArgumentError,
    Mask,
    NotFoundError,
    ResourceExhaustedError,
    VAEExplainer,
    VAEExplanation,
    available_methods,
    check_region,
    vae_methods,
)

from .conftest import Snapshot
from .vae_helpers import ALL_METHODS, AREA_METHODS, REGIONS, TinyVAE, _close, _mask, _x


@pytest.fixture
def vae() -> TinyVAE:
    """Float64, so references computed with other batch sizes or code paths agree to ~1e-12, not float32 noise."""
    return TinyVAE().double().eval()


@pytest.mark.parametrize(
    ("regions", "match", "field"),
    [
        (None, "need regions", "regions"),
        ([[(0, 0, 2, 2)]], "1 region items for 2 images", "regions"),
        ([[(0, 0, 2, 2)], []], "image 1 has no regions", "regions[1]"),
        ([[(0, 0, 2, 2)], [(2, 0, 2, 4)]], "empty: x1=2 == x0=2", "regions[1][0].x1"),
        ([[(0, 3, 2, 3)], [(0, 0, 1, 1)]], "empty: y1=3 == y0=3", "regions[0][0].y1"),
        ([[(0, 0, 2, 2), (5, 0, 3, 4)], [(0, 0, 1, 1)]], "inverted: x1=3 < x0=5", "regions[0][1].x1"),
        ([[(0, 6, 2, 1)], [(0, 0, 1, 1)]], "inverted: y1=1 < y0=6", "regions[0][0].y1"),
        ([[(0, 0, 9, 2)], [(0, 0, 1, 1)]], r"x1=9 is out of bounds: must be in \[0, 8\]", "regions[0][0].x1"),
        ([[(0, 0, 2, 2)], [(-1, 0, 1, 1)]], "x0=-1 is out of bounds", "regions[1][0].x0"),
        ([[(0, 0, 2, 2)], [(0, -2, 1, 1)]], "y0=-2 is out of bounds", "regions[1][0].y0"),
        ([[(0, 0, 2, 20)], [(0, 0, 1, 1)]], "y1=20 is out of bounds", "regions[0][0].y1"),
        ([[(0, 0, 2.5, 2)], [(0, 0, 1, 1)]], "x1 must be an int", "regions[0][0].x1"),
        ([[(0, 0, True, 2)], [(0, 0, 1, 1)]], "x1 must be an int", "regions[0][0].x1"),
        ([[(0, 0, 2)], [(0, 0, 1, 1)]], "needs 4 coordinates", "regions[0][0]"),
        (
            [[torch.ones(4, 4, dtype=torch.bool)], [(0, 0, 1, 1)]],
            r"mask shape \(4, 4\) does not match",
            "regions[0][0]",
        ),
        ([[torch.ones(8, 8)], [(0, 0, 1, 1)]], "must be torch.bool", "regions[0][0]"),
        ([[torch.full((8, 8), 2)], [(0, 0, 1, 1)]], "only hold 0 and 1", "regions[0][0]"),
        ([[torch.zeros(8, 8, dtype=torch.bool)], [(0, 0, 1, 1)]], "mask is empty", "regions[0][0]"),
        ([[torch.ones(1, 8, 8, dtype=torch.bool)], [(0, 0, 1, 1)]], r"must be \[H, W\]", "regions[0][0]"),
        ([["box"], [(0, 0, 1, 1)]], "must be a box", "regions[0][0]"),
        ([3, [(0, 0, 1, 1)]], "must be a region or a list", "regions[0]"),
        ("0,0,1,1", "one item per image", "regions"),
    ],
)
def test_bad_regions_raise_naming_the_field(vae: TinyVAE, regions: object, match: str, field: str) -> None:
    ex = VAEExplainer(vae, input_size=(8, 8))
    snap = Snapshot.of(vae)
    with pytest.raises(InvalidArgumentError, match=match) as info:
        ex.explain(_x(2), methods="area_saliency", regions=regions)  # type: ignore[arg-type]
    assert info.value.field == field and info.value.code == "INVALID_ARGUMENT"
    snap.assert_same(vae)


@pytest.mark.parametrize(
    ("region", "match", "field"),
    [
        ((0, 0, 9, 2), r"x1=9 is out of bounds: must be in \[0, 8\]", "images[0].regions[1].x1"),
        ((5, 0, 3, 4), "inverted: x1=3 < x0=5", "images[0].regions[1].x1"),
        ((0, 0, 2.5, 2), "x1 must be an int", "images[0].regions[1].x1"),
        (torch.ones(4, 4, dtype=torch.bool), r"mask shape \(4, 4\) does not match", "images[0].regions[1]"),
        (torch.zeros(8, 8, dtype=torch.bool), "mask is empty", "images[0].regions[1]"),
    ],
)
def test_check_region_is_the_explainers_rule_under_the_callers_field(region: object, match: str, field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as info:
        check_region(region, (8, 8), "images[0].regions[1]")  # type: ignore[arg-type]
    assert info.value.field == field


def test_check_region_returns_the_engine_region() -> None:
    assert check_region((1, 2, 3, 4), (8, 8), "r") == Box(1, 2, 3, 4)
    mask = check_region(torch.eye(8, dtype=torch.uint8), (8, 8), "r")
    assert isinstance(mask, Mask) and torch.equal(mask.data, torch.eye(8, dtype=torch.bool))


@pytest.mark.parametrize(
    ("kwargs", "error", "match", "field"),
    [
        ({"methods": "gradcam"}, InvalidArgumentError, "unknown VAE method 'gradcam'", "methods"),
        ({"methods": [3]}, InvalidArgumentError, "must be strings", "methods"),
        ({"methods": "area_gradcam", "layers": "encoder.9"}, NotFoundError, "no layer 'encoder.9'", "layers"),
        ({"methods": "area_gradcam", "layers": "decoder.0"}, InvalidArgumentError, "not run by the encoder", "layers"),
        ({"methods": "area_gradcam", "layers": []}, InvalidArgumentError, "layers is empty", "layers"),
        ({"methods": "area_gradcam", "layers": "to_logvar"}, InvalidArgumentError, "does not influence", "layers"),
        ({"methods": "latent_gradcam", "layers": "to_logvar"}, InvalidArgumentError, "does not influence", "layers"),
        (
            {"methods": "latent_gradcam", "latents": [2]},
            InvalidArgumentError,
            r"not a latent dimension in \[0, 2\)",
            "latents[0]",
        ),
        ({"methods": "latent_gradcam", "latents": [1, 1]}, InvalidArgumentError, "repeats", "latents"),
        ({"methods": "latent_gradcam", "latents": []}, InvalidArgumentError, "latents is empty", "latents"),
        ({"sample_seed": -1}, InvalidArgumentError, "sample_seed", "seed"),
        ({"images": torch.rand(2, 1, 8, 8)}, InvalidArgumentError, "1 channels, the model expects 3", "images"),
        ({"images": torch.full((1, 3, 8, 8), float("inf"))}, InvalidArgumentError, "NaN or infinite", "images"),
    ],
)
def test_bad_arguments_raise_and_leave_the_model_alone(
    vae: TinyVAE, kwargs: dict[str, object], error: type[Exception], match: str, field: str
) -> None:
    vae.train()
    vae.to_mu.weight.requires_grad_(True)
    snap = Snapshot.of(vae)
    args: dict[str, object] = {"images": _x(2), "methods": "area_saliency", "regions": [[(0, 0, 2, 2)], [(1, 1, 3, 3)]]}
    args.update(kwargs)
    with pytest.raises(error, match=match) as info:
        VAEExplainer(vae, input_size=(8, 8)).explain(**args)  # type: ignore[arg-type]
    assert getattr(info.value, "field", None) == field
    snap.assert_same(vae)


def test_constructor_errors() -> None:
    with pytest.raises(InvalidArgumentError, match=r"must be a torch\.nn\.Module"):
        VAEExplainer(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="no callable encode or decode"):
        VAEExplainer(nn.Conv2d(3, 3, 1))
    with pytest.raises(InvalidArgumentError, match="strategy"):
        VAEExplainer(TinyVAE(), strategy="fast")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="max_rows"):
        VAEExplainer(TinyVAE(), max_rows=0)
    assert VAEExplainer(TinyVAE()).strategy == "batched" and VAEExplainer(TinyVAE()).max_rows == 8
    with pytest.raises(NotFoundError, match="did you mean encoder"):
        VAEExplainer(TinyVAE(), layers="encodr")


def test_encode_must_return_mu_and_logvar() -> None:
    vae = TinyVAE()
    ex = VAEExplainer(vae, encode=lambda x: vae.encoder(x), decode=vae.decode, input_size=(8, 8))  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidArgumentError, match=r"encode must return \(mu, logvar\)"):
        ex.explain(_x(1), methods=())


# ------------------------------------------------------------------------------------------------ safety
def test_model_unchanged_after_success_and_after_a_raise_in_the_middle(vae: TinyVAE) -> None:
    vae.train()
    vae.decoder[0].weight.requires_grad_(True)
    snap = Snapshot.of(vae)
    ex = VAEExplainer(vae, input_size=(8, 8))
    ex.explain(_x(), methods=ALL_METHODS, regions=REGIONS)
    snap.assert_same(vae)

    def failing_decode(z: Tensor) -> Tensor:
        out = vae.decode(z)
        if torch.is_grad_enabled():  # the probe (no grad) passes; the explained forward fails after the encoder
            raise RuntimeError("decoder exploded")
        return out

    broken = VAEExplainer(vae, encode=vae.encode, decode=failing_decode, input_size=(8, 8))
    with pytest.raises(RuntimeError, match="decoder exploded"):
        broken.explain(_x(), methods=ALL_METHODS, regions=REGIONS)
    snap.assert_same(vae)
    assert vae.training and vae.decoder[0].weight.requires_grad


def test_out_of_memory_splits_the_batch_and_keeps_each_images_sample(vae: TinyVAE) -> None:
    x = _x()
    normal = VAEExplainer(vae, input_size=(8, 8)).explain(x, ALL_METHODS, regions=REGIONS, sample_seed=3)
    calls: list[int] = []

    def small_batches_only(z: Tensor) -> Tensor:
        calls.append(int(z.shape[0]))
        if z.shape[0] > 1:
            raise torch.OutOfMemoryError("pretend the device is full")
        return vae.decode(z)

    snap = Snapshot.of(vae)
    ex = VAEExplainer(vae, encode=vae.encode, decode=small_batches_only, input_size=(8, 8), strategy="batched")
    split = ex.explain(x, ALL_METHODS, regions=REGIONS, sample_seed=3)
    assert calls == [1, 3, 1, 2, 1, 1]  # probe, the batch of 3, then 1 + (2 -> 1 + 1)
    for a, b in zip(normal, split, strict=True):
        torch.testing.assert_close(a.reconstruction, b.reconstruction)
        for key in a.maps:
            torch.testing.assert_close(a.maps[key], b.maps[key])
    snap.assert_same(vae)

    def always(z: Tensor) -> Tensor:
        if torch.is_grad_enabled():  # the explained pass (the probe runs without grad)
            raise torch.OutOfMemoryError("pretend the device is full")
        return vae.decode(z)

    with pytest.raises(ResourceExhaustedError, match="single image"):
        VAEExplainer(vae, encode=vae.encode, decode=always, input_size=(8, 8)).explain(
            x[:1], "area_saliency", regions=[[(0, 0, 2, 2)]]
        )
    snap.assert_same(vae)


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_works_inside_inference_mode_and_no_grad(vae: TinyVAE, mode: str) -> None:
    ex = VAEExplainer(vae, input_size=(8, 8))
    x = _x()
    expected = ex.explain(x, methods=ALL_METHODS, regions=REGIONS)
    ctx = torch.inference_mode() if mode == "inference_mode" else torch.no_grad()
    with ctx:
        x_inner = x.clone()
        got = ex.explain(x_inner, methods=ALL_METHODS, regions=REGIONS)
    for a, b in zip(expected, got, strict=True):
        for key in a.maps:
            torch.testing.assert_close(a.maps[key], b.maps[key])


def test_caller_autograd_history_is_not_touched(vae: TinyVAE) -> None:
    x = _x().requires_grad_(True)
    y = x * 2
    VAEExplainer(vae, input_size=(8, 8)).explain(y, methods=AREA_METHODS, regions=REGIONS)
    assert x.grad is None


# ------------------------------------------------------------------------------------------------ API surface
def test_layers_methods_and_result_type(vae: TinyVAE) -> None:
    ex = VAEExplainer(vae, input_size=(8, 8))
    assert ex.candidate_layers == ("encoder.0", "encoder.1", "encoder.2", "encoder.3", "encoder", "to_mu")
    assert ex.default_layers == ("encoder",)  # the last feature map that is not mu/logvar itself
    assert ex.methods == vae_methods() == ALL_METHODS
    assert not set(vae_methods()) & set(available_methods())  # the classifier explainer never offers them
    assert ex.output_size() == (8, 8) and ex.latent_dims() == 2
    [r] = ex.explain(_x(1), methods=("area_saliency", "area_gradcam"), regions=[[Box(0, 0, 4, 4), (4, 4, 8, 8)]])
    assert isinstance(r, VAEExplanation) and isinstance(r, Explanation)
    assert r.regions == (Box(0, 0, 4, 4), Box(4, 4, 8, 8))
    assert r.targets == (0, 1) and r.input_size == (8, 8)
    assert r.map("area_gradcam", target=1).shape == (4, 4)
    assert r.upsampled("area_gradcam", target=1).shape == (8, 8)
    assert r.normalized("area_saliency", target=0).max() == 1.0
    with pytest.raises(InvalidArgumentError, match="2 maps match"):
        r.map("area_saliency")
    with pytest.raises(AttributeError):
        r.reconstruction = torch.zeros(1)  # type: ignore[misc]


def test_explicit_callables_and_a_vector_latent() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(5)
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4 * 8 * 8, 6)
            self.up = nn.Linear(3, 3 * 8 * 8)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    net = Flat().double().eval()

    def enc(x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = net.head(torch.relu(net.conv(x)).flatten(1)).chunk(2, dim=1)
        return mu, logvar

    def dec(z: Tensor) -> Tensor:
        return torch.sigmoid(net.up(z)).view(-1, 3, 8, 8)

    ex = VAEExplainer(net, encode=enc, decode=dec, input_size=(8, 8))
    assert ex.default_layers == ("conv",) and ex.latent_dims() == 3
    x = _x(2)
    results = ex.explain(x, methods=ALL_METHODS, regions=[(0, 0, 8, 4), [(2, 2, 3, 3), (0, 0, 8, 8)]])
    assert results[0].latents == (0, 1, 2)
    for c in range(3):
        a, g = _layer_grad_reference_flat(net, x[:1], c)
        ref = torch.relu((g.mean(dim=(1, 2))[:, None, None] * a).sum(0))
        _close(results[0].map("latent_gradcam", "conv", c), ref)
    ref_sal = Saliency(lambda xi: (dec(enc(xi)[0]) * _mask((0, 0, 8, 4))).sum((1, 2, 3))).attribute(
        x[:1].clone(), abs=False
    )[0]
    _close(results[0].map("area_saliency", "", 0), ref_sal)


def _layer_grad_reference_flat(net: nn.Module, x: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """(conv output, d mu_c / d conv output) for the vector-latent model, written out by hand."""
    with torch.enable_grad():
        a = net.conv(x).detach().requires_grad_(True)
        mu = net.head(torch.relu(a).flatten(1))[:, :3]
        (g,) = torch.autograd.grad(mu[0, c], a)
    return a.detach()[0], g[0]
