"""VAE anomaly maps, one per image: "where is this image abnormal?", as its reconstruction error or as latent
attention (after Liu et al., "Towards Visually Explaining Variational Autoencoders", CVPR 2020).

Exact definitions. ``x`` is the input ``[C, H, W]``, ``x_hat`` its reconstruction (``decode(mu)``, or the seeded
sample), ``A`` the encoder layer's output ``[K, h, w]`` and ``q(z|x) = N(mu, diag(exp(logvar)))``.

* ``anomaly_recon_error``: ``E[p, q] = sum_c (x[c, p, q] - x_hat[c, p, q])^2``, ``[H, W]`` at input resolution (the
  classic reconstruction-error anomaly map; the input and the reconstruction must have the same size).
* ``anomaly_latent``: Grad-CAM of the image's KL term ``KL = 1/2 sum (mu^2 + exp(logvar) - logvar - 1)`` (summed
  over every latent element) on the encoder layer: ``alpha_k = mean_pq dKL / dA_k[p, q]``, ``M = ReLU(sum_k alpha_k
  A_k)``, ``[h, w]`` on the layer's grid. The paper derives its anomaly attention from the latent of the image under a
  model trained on normal data; the KL term is how far that latent is from the prior, i.e. how unusual the encoder
  found the image, and its Grad-CAM says where. The Grad-CAM combination is ``latent_gradcam``'s (:func:`latent_cam`).

Both are one map per image (``MapKey.target == IMAGE_TARGET``); regions play no part (given ones are ignored, as for
``latent_gradcam``). How well they localise synthetic defects is measured by ``python -m model_store.anomaly``: on
shapes-vae the reconstruction error far better than the latent map, which does best on early, fine layers.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine._vae._base import Rows, VAEContext, VAEMethod, VAENeed
from handlers.engine._vae.latent_gradcam import latent_cam
from handlers.engine.errors import InvalidArgumentError
from handlers.engine.methods import Scope

__all__ = ["AnomalyLatent", "AnomalyReconError"]


class AnomalyReconError(VAEMethod):
    """Per-pixel squared reconstruction error, summed over channels, ``[1, B, H, W]``."""

    name = "anomaly_recon_error"
    scope: ClassVar[Scope] = "input"
    rows: ClassVar[Rows] = "image"
    needs: ClassVar[frozenset[VAENeed]] = frozenset({"reconstruction"})

    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        x, x_hat = ctx.images, ctx.reconstruction
        if x.shape != x_hat.shape:
            raise InvalidArgumentError(
                f"the reconstruction {tuple(x_hat.shape[1:])} differs in shape from the input {tuple(x.shape[1:])}; "
                "a per-pixel reconstruction error needs equal shapes",
                field="methods",
            )
        return (x - x_hat).square().sum(dim=1).unsqueeze(0)


class AnomalyLatent(VAEMethod):
    """Grad-CAM of the image's KL term on an encoder layer, ``[1, B, h, w]``."""

    name = "anomaly_latent"
    scope: ClassVar[Scope] = "layer"
    rows: ClassVar[Rows] = "image"
    needs: ClassVar[frozenset[VAENeed]] = frozenset({"activation", "kl_grad"})

    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        return latent_cam(ctx.kl_gradient(layer), ctx.activation(layer))
