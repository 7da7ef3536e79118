"""Latent Grad-CAM: attention per latent dimension, after Liu et al., "Towards Visually Explaining Variational
Autoencoders" (CVPR 2020).

Exact definition used here. Let ``A`` be the encoder layer's output ``[K, h, w]`` and ``mu`` the posterior mean.
The score of latent dimension ``c`` is ``z_c = sum_{p,q} mu[c, p, q]`` for a spatial latent ``[C, h', w']`` (one
"dimension" per latent channel, so a map says where in the input the encoder found what that channel encodes,
anywhere in the image) and ``z_c = mu[c]`` for a vector latent ``[D]``. Then, as in the paper,
``alpha_{c,k} = mean_{p,q} dz_c / dA_k[p, q]`` and ``M_c = ReLU(sum_k alpha_{c,k} A_k)`` on the layer's grid. The
total map (``MapKey.target == LATENT_TOTAL``) is the paper's overall attention, the mean of ``M_c`` over the explained
dimensions. (The authors' released code instead back-propagates ``sum(mu)`` once; that puts the ReLU after the sum
and differs whenever dimensions disagree in sign.) Regions play no part: the maps explain the encoder.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from handlers.engine._vae._base import Rows, VAEContext, VAEMethod, VAENeed
from handlers.engine.methods import Scope

__all__ = ["LatentGradCam", "latent_cam"]


class LatentGradCam(VAEMethod):
    """``M_c`` for each explained latent dimension ``c`` (rows in request order), then their mean (last row)."""

    name = "latent_gradcam"
    scope: ClassVar[Scope] = "layer"
    rows: ClassVar[Rows] = "latents"
    needs: ClassVar[frozenset[VAENeed]] = frozenset({"activation", "latent_grad"})

    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        maps = latent_cam(ctx.latent_gradient(layer), ctx.activation(layer))
        return torch.cat([maps, maps.mean(dim=0, keepdim=True)], dim=0)


def latent_cam(grad: Tensor, a: Tensor) -> Tensor:
    """Grad-CAM of latent scores: ``ReLU(sum_k mean_pq(grad[l, b, k]) * a[b, k])``.

    Args:
        grad: d score_l / d layer output, ``[L, B, K, h, w]`` (one row per latent score).
        a: The layer output ``[B, K, h, w]``.

    Returns:
        ``[L, B, h, w]``.
    """
    alpha = grad.mean(dim=(-2, -1))  # [L, B, K]
    return torch.relu(torch.einsum("lbk,bkhw->lbhw", alpha, a))
