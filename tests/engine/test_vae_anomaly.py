"""VAE anomaly maps on a tiny VAE with seeded weights: each equals its definition computed independently, one map per
image at the declared shape, regions play no part, and bad layers, shapes and models raise errors naming the field.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from handlers.engine import (
    IMAGE_TARGET,
    InvalidArgumentError,
    MapKey,
    NotFoundError,
    VAEExplainer,
    get_vae_method,
)

from .vae_helpers import ANOMALY_METHODS, REGIONS, TinyVAE, _close, _x


@pytest.fixture
def vae() -> TinyVAE:
    return TinyVAE().double().eval()


def _kl_gradcam(vae: TinyVAE, x: Tensor, layer: int) -> Tensor:
    """Grad-CAM of each image's KL(q(z|x) || N(0, I)) on ``encoder[layer]``, by hand: a forward split at the layer."""
    out = []
    for image in x:
        a = vae.encoder[: layer + 1](image[None]).detach().requires_grad_(True)
        h = vae.encoder[layer + 1 :](a)
        mu, logvar = vae.to_mu(h), vae.to_logvar(h)
        kl = 0.5 * (mu.square() + logvar.exp() - logvar - 1).sum()
        [g] = torch.autograd.grad(kl, a)
        alpha = g.mean(dim=(2, 3), keepdim=True)
        out.append(torch.relu((alpha * a).sum(dim=1))[0].detach())
    return torch.stack(out)


def test_reconstruction_error_is_the_squared_error_summed_over_channels(vae: TinyVAE) -> None:
    x = _x()
    results = VAEExplainer(vae, input_size=(8, 8)).explain(x, methods=("anomaly_recon_error",))
    ref = (vae(x) - x).square().sum(dim=1).detach()
    for i, r in enumerate(results):
        assert set(r.maps) == {MapKey("anomaly_recon_error", "", IMAGE_TARGET)}
        got = r.map("anomaly_recon_error")
        assert got.shape == (8, 8) and bool(torch.isfinite(got).all())
        _close(got, ref[i])
        assert r.targets == () and r.latents == ()


def test_reconstruction_error_of_a_sample_uses_that_sample(vae: TinyVAE) -> None:
    x = _x()
    ex = VAEExplainer(vae, input_size=(8, 8))
    sampled = ex.explain(x, methods=("anomaly_recon_error",), sample_seed=3)
    for i, r in enumerate(sampled):
        _close(r.map("anomaly_recon_error"), (r.reconstruction.double() - x[i]).square().sum(dim=0))
    plain = ex.explain(x, methods=("anomaly_recon_error",))
    assert not torch.equal(sampled[0].map("anomaly_recon_error"), plain[0].map("anomaly_recon_error"))


@pytest.mark.parametrize(("name", "index"), [("encoder.1", 1), ("encoder", 3)])
def test_latent_anomaly_is_gradcam_of_the_kl_term(vae: TinyVAE, name: str, index: int) -> None:
    x = _x()
    results = VAEExplainer(vae, input_size=(8, 8)).explain(x, methods=("anomaly_latent",), layers=(name,))
    ref = _kl_gradcam(vae, x, index)
    for i, r in enumerate(results):
        got = r.map("anomaly_latent", name, IMAGE_TARGET)
        assert got.shape == (4, 4) and bool(torch.isfinite(got).all()) and bool((got >= 0).all())
        _close(got, ref[i])
    assert any(float(r.map("anomaly_latent", name).max()) > 0 for r in results)  # not a vacuous all-zero map


def test_anomaly_maps_ignore_regions_and_do_not_change_region_maps(vae: TinyVAE) -> None:
    x = _x()
    ex = VAEExplainer(vae, input_size=(8, 8), layers=("encoder.1", "encoder"))
    alone = ex.explain(x, methods=ANOMALY_METHODS)
    together = ex.explain(x, methods=(*ANOMALY_METHODS, "area_gradcam"), regions=REGIONS)
    area = ex.explain(x, methods=("area_gradcam",), regions=REGIONS)
    for a, t, g in zip(alone, together, area, strict=True):
        assert len(a.maps) == 3  # one reconstruction error, one latent map per layer
        for key, value in a.maps.items():
            _close(t.maps[key], value.double())
        for key, value in g.maps.items():
            _close(t.maps[key], value.double())


def test_anomaly_methods_declare_one_map_per_image() -> None:
    for name in ANOMALY_METHODS:
        assert get_vae_method(name).rows == "image"
    assert get_vae_method("anomaly_recon_error").scope == "input"
    assert get_vae_method("anomaly_latent").scope == "layer"


def test_bad_layers_and_shapes(vae: TinyVAE) -> None:
    ex = VAEExplainer(vae, input_size=(8, 8))
    with pytest.raises(NotFoundError) as err:
        ex.explain(_x(), methods=("anomaly_latent",), layers=("encoder.9",))
    assert err.value.field == "layers"
    with pytest.raises(InvalidArgumentError) as bad:
        ex.explain(_x(), methods=("anomaly_latent",), layers=())
    assert bad.value.field == "layers"
    bigger = VAEExplainer(vae, decode=lambda z: F.interpolate(vae.decode(z), scale_factor=2.0), input_size=(8, 8))
    with pytest.raises(InvalidArgumentError, match="differs in shape from the input") as shape:
        bigger.explain(_x(), methods=("anomaly_recon_error",))
    assert shape.value.field == "methods"
    [ok] = bigger.explain(_x(1), methods=("anomaly_latent",))  # the latent map does not need equal sizes
    assert ok.map("anomaly_latent").shape == (4, 4)
