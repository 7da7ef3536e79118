"""VAE area maps on a tiny VAE with seeded weights: exact against finite differences and Captum, batched regions
equal one-at-a-time calls for every strategy, bad regions raise errors naming the field, the model is left as found.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from captum.attr import GuidedBackprop, Saliency
from torch import Tensor, nn

from handlers.engine import (
    LATENT_TOTAL,
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

AREA_METHODS = ("area_saliency", "area_guided", "area_gradcam")
#: (strategy, max_rows): every way of batching region backward passes; with 3 images, max_rows=8 groups 2 regions
#: per vmapped call (a full group and a remainder), None puts all in one.
CONFIGS = [("replicate", None), ("batched", None), ("batched", 8), ("loop", None)]
ALL_METHODS = (*AREA_METHODS, "latent_gradcam")


class TinyVAE(nn.Module):
    """8x8 RGB -> spatial latent [2, 4, 4] -> 8x8 RGB; seeded weights, sigmoid output, non-inplace ReLUs.

    Two encoder stages so a layer sweep and a "not the last layer" case exist; a ReLU in the decoder so the guided
    rule matters on both sides of the latent.
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()
        )
        self.to_mu = nn.Conv2d(5, 2, 1)
        self.to_logvar = nn.Conv2d(5, 2, 1)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2, 4, 4, 2, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)
        )
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)[0])


def _x(batch: int = 3, dtype: torch.dtype = torch.float64, seed: int = 1) -> Tensor:
    return torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _close(got: Tensor, ref: Tensor) -> None:
    """Maps are float32 by contract; the float64 references agree to float32 rounding."""
    assert got.dtype == torch.float32
    scale = float(ref.abs().max())  # CAM maps are float32 sums of larger terms: allow float32 rounding of those
    torch.testing.assert_close(got.double(), ref.double(), atol=1e-6 * scale + 1e-12, rtol=1e-6)


def _mask(region: object, size: tuple[int, int] = (8, 8)) -> Tensor:
    m = torch.zeros(size, dtype=torch.bool)
    if isinstance(region, Tensor):
        return region.bool()
    x0, y0, x1, y1 = region  # type: ignore[misc]
    m[y0:y1, x0:x1] = True
    return m


def _score_fn(model: TinyVAE, mask: Tensor) -> Callable[[Tensor], Tensor]:
    """The region score as a plain forward function: ``sum(x_hat * mask)`` over channels and pixels."""
    return lambda x: (model(x) * mask.to(x.dtype)).sum(dim=(1, 2, 3))


class _Scored(nn.Module):
    """The VAE followed by the masked sum, as an ``nn.Module`` (Captum's guided backprop hooks its ReLU modules)."""

    def __init__(self, model: TinyVAE, mask: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return (self.model(x) * self.mask.to(x.dtype)).sum(dim=(1, 2, 3))


@pytest.fixture
def vae() -> TinyVAE:
    """Float64, so references computed with other batch sizes or code paths agree to ~1e-12, not float32 noise."""
    return TinyVAE().double().eval()


REGIONS = [[(0, 0, 3, 3), (2, 1, 8, 5)], [(4, 4, 8, 8)], [(1, 6, 2, 7), (0, 0, 8, 8), (3, 0, 7, 2)]]


# ------------------------------------------------------------------------------------------------ exactness
def test_area_saliency_equals_finite_differences(vae: TinyVAE) -> None:
    model = vae
    ex = VAEExplainer(model, input_size=(8, 8))
    x = _x(2, torch.float64)
    regions = [[(1, 2, 5, 6)], [torch.rand(8, 8, generator=torch.Generator().manual_seed(4)) > 0.6]]
    results = ex.explain(x, methods="area_saliency", regions=regions)
    eps = 1e-6
    for i, result in enumerate(results):
        score = _score_fn(model, _mask(regions[i][0]))
        flat = x[i : i + 1].reshape(-1)
        fd = torch.zeros_like(flat)
        for j in range(flat.numel()):
            plus, minus = flat.clone(), flat.clone()
            plus[j] += eps
            minus[j] -= eps
            fd[j] = (score(plus.view(1, 3, 8, 8)) - score(minus.view(1, 3, 8, 8))).item() / (2 * eps)
        got = result.map("area_saliency", "", 0)
        assert got.shape == (3, 8, 8)
        assert float(got.abs().max()) > 1e-3  # a real gradient, not zeros
        _close(got.reshape(-1), fd)


@pytest.mark.parametrize(("strategy", "max_rows"), CONFIGS)
def test_area_saliency_equals_captum_saliency(vae: TinyVAE, strategy: str, max_rows: int | None) -> None:
    x = _x()
    ex = VAEExplainer(vae, input_size=(8, 8), strategy=strategy, max_rows=max_rows)  # type: ignore[arg-type]
    results = ex.explain(x, methods="area_saliency", regions=REGIONS)
    for i, result in enumerate(results):
        for j, region in enumerate(REGIONS[i]):
            ref = Saliency(_score_fn(vae, _mask(region))).attribute(x[i : i + 1].clone(), abs=False)[0]
            _close(result.map("area_saliency", "", j), ref)


def test_area_guided_equals_captum_guided_backprop(vae: TinyVAE) -> None:
    x = _x()
    results = VAEExplainer(vae, input_size=(8, 8)).explain(x, methods="area_guided", regions=REGIONS)
    differs = False
    for i, result in enumerate(results):
        for j, region in enumerate(REGIONS[i]):
            ref = GuidedBackprop(_Scored(vae, _mask(region))).attribute(x[i : i + 1].clone())[0]
            got = result.map("area_guided", "", j)
            _close(got, ref)
            plain = Saliency(_score_fn(vae, _mask(region))).attribute(x[i : i + 1].clone(), abs=False)[0]
            differs |= not torch.allclose(got.double(), plain, atol=1e-4)
    assert differs, "the guided rule changed nothing: the test would not catch a missing rule"


def _layer_grad_reference(vae: TinyVAE, x: Tensor, layer: nn.Module, score: Callable[[Tensor, Tensor], Tensor]):
    """(activation, d score / d activation) of one image via a forward hook, independent of the engine."""
    box: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _a: object, out: Tensor) -> None:
        out.retain_grad()
        box["a"] = out

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            mu, _ = vae.encode(x)
            score(mu, vae.decode(mu)).backward()
    finally:
        handle.remove()
    vae.zero_grad(set_to_none=True)
    a = box["a"]
    assert a.grad is not None
    return a.detach()[0], a.grad[0]


def test_area_gradcam_equals_hand_computed_gradcam_for_each_layer_of_a_sweep(vae: TinyVAE) -> None:
    x = _x()
    layers = ("encoder.1", "encoder.3")
    results = VAEExplainer(vae, input_size=(8, 8)).explain(x, methods="area_gradcam", regions=REGIONS, layers=layers)
    modules = dict(vae.named_modules())
    for i, result in enumerate(results):
        for j, region in enumerate(REGIONS[i]):
            m = _mask(region)
            for layer in layers:
                a, g = _layer_grad_reference(vae, x[i : i + 1], modules[layer], lambda _mu, xh, m=m: (xh * m).sum())
                ref = torch.relu((g.mean(dim=(1, 2))[:, None, None] * a).sum(0))
                got = result.map("area_gradcam", layer, j)
                assert got.shape == (4, 4)
                _close(got, ref)
    assert any(float(r.map("area_gradcam", "encoder.3", 0).max()) > 0 for r in results)


def test_latent_gradcam_follows_the_documented_definition(vae: TinyVAE) -> None:
    x = _x()
    results = VAEExplainer(vae, input_size=(8, 8)).explain(x, methods="latent_gradcam", layers="encoder.1")
    layer = dict(vae.named_modules())["encoder.1"]
    for i, result in enumerate(results):
        assert result.latents == (0, 1)
        per_dim = []
        for c in (0, 1):
            a, g = _layer_grad_reference(vae, x[i : i + 1], layer, lambda mu, _xh, c=c: mu[0, c].sum())
            per_dim.append(torch.relu((g.mean(dim=(1, 2))[:, None, None] * a).sum(0)))
            _close(result.map("latent_gradcam", "encoder.1", c), per_dim[-1])
        total = result.map("latent_gradcam", "encoder.1", LATENT_TOTAL)
        _close(total, torch.stack(per_dim).mean(0))
        assert float(total.max()) > 0
    one = VAEExplainer(vae, input_size=(8, 8)).explain(x, methods="latent_gradcam", layers="encoder.1", latents=[1])
    assert one[0].latents == (1,)
    assert set(one[0].maps) == {("latent_gradcam", "encoder.1", 1), ("latent_gradcam", "encoder.1", LATENT_TOTAL)}
    torch.testing.assert_close(one[0].map("latent_gradcam", target=1), results[0].map("latent_gradcam", target=1))


def test_reconstruction_is_decode_of_mu_and_sampling_is_seeded(vae: TinyVAE) -> None:
    x = _x()
    ex = VAEExplainer(vae, input_size=(8, 8))
    [r0, r1, r2] = ex.explain(x, methods=())
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        expected = vae.decode(mu)
    for i, r in enumerate((r0, r1, r2)):
        _close(r.reconstruction, expected[i])
        assert r.maps == {} and r.regions == () and r.predictions == ()
    a = ex.explain(x, methods="area_saliency", regions=REGIONS, sample_seed=7)
    b = ex.explain(x, methods="area_saliency", regions=REGIONS, sample_seed=7)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7)).double()  # float32 draws, documented
    with torch.no_grad():
        sampled = vae.decode(mu + torch.exp(0.5 * logvar) * eps)
    for i in range(3):
        _close(a[i].reconstruction, sampled[i])
        assert torch.equal(a[i].map("area_saliency", "", 0), b[i].map("area_saliency", "", 0))
        assert not torch.allclose(a[i].reconstruction.double(), expected[i], atol=1e-3)
    # The sampled path's gradient is that of the masked sum of decode(mu + sigma * eps) with eps fixed.
    score = lambda xi: (vae.decode(sum_mu_eps(vae, xi, eps[:1])) * _mask(REGIONS[0][0])).sum((1, 2, 3))  # noqa: E731
    ref = Saliency(score).attribute(x[:1].clone(), abs=False)[0]
    _close(a[0].map("area_saliency", "", 0), ref)


def sum_mu_eps(vae: TinyVAE, x: Tensor, eps: Tensor) -> Tensor:
    mu, logvar = vae.encode(x)
    return mu + torch.exp(0.5 * logvar) * eps


# ------------------------------------------------------------------------------------------------ batching
@pytest.mark.parametrize(("strategy", "max_rows"), CONFIGS)
def test_batched_regions_equal_one_region_at_a_time(vae: TinyVAE, strategy: str, max_rows: int | None) -> None:
    x = _x()
    layers = ("encoder.1", "encoder")
    ex = VAEExplainer(vae, input_size=(8, 8), layers=layers, strategy=strategy, max_rows=max_rows)  # type: ignore[arg-type]
    together = ex.explain(x, methods=ALL_METHODS, regions=REGIONS, latents=[0, 1])
    for i, result in enumerate(together):
        assert result.targets == tuple(range(len(REGIONS[i])))
        assert (
            len(result.maps) == len(REGIONS[i]) * 4 + 2 * 3
        )  # 1 + 1 + 2 layers per region; 2 latents + total per layer
        for j, region in enumerate(REGIONS[i]):
            [alone] = VAEExplainer(vae, input_size=(8, 8), layers=("encoder.1", "encoder"), strategy="loop").explain(
                x[i : i + 1], methods=AREA_METHODS, regions=[[region]]
            )
            for key, value in alone.maps.items():
                _close(result.maps[key._replace(target=j)], value)
        _close(result.reconstruction, vae(x[i : i + 1])[0].detach())


def test_strategies_agree_on_masks_and_ragged_counts(vae: TinyVAE) -> None:
    x = _x()
    regions = [[torch.eye(8, dtype=torch.bool), (0, 0, 1, 1)], [Mask(torch.ones(8, 8, dtype=torch.bool))], REGIONS[2]]
    out = {
        c: VAEExplainer(vae, input_size=(8, 8), strategy=c[0], max_rows=c[1]).explain(  # type: ignore[arg-type]
            x, methods=ALL_METHODS, regions=regions
        )
        for c in CONFIGS
    }
    for c in CONFIGS[1:]:
        for a, b in zip(out[CONFIGS[0]], out[c], strict=True):
            assert a.maps.keys() == b.maps.keys()
            for key in a.maps:
                _close(a.maps[key], b.maps[key])


# ------------------------------------------------------------------------------------------------ validation
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
