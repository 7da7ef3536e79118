"""VAE area maps on a tiny VAE with seeded weights: exact against finite differences and Captum, and batched
regions equal one-at-a-time calls for every strategy (bad input and model safety: test_vae_checks.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from captum.attr import GuidedBackprop, Saliency
from torch import Tensor, nn

from handlers.engine import (
    LATENT_TOTAL,
    Mask,
    VAEExplainer,
)

from .vae_helpers import ALL_METHODS, AREA_METHODS, CONFIGS, REGIONS, TinyVAE, _close, _mask, _score_fn, _Scored, _x


@pytest.fixture
def vae() -> TinyVAE:
    """Float64, so references computed with other batch sizes or code paths agree to ~1e-12, not float32 noise."""
    return TinyVAE().double().eval()


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
        # 1 + 1 + 2 x 2 layers per region; 2 latents + total per layer; one reconstruction error, one latent map per
        # layer
        assert len(result.maps) == len(REGIONS[i]) * 6 + 2 * 3 + 1 + 2
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
