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

__all__ = ["LatentGradCam"]


class LatentGradCam(VAEMethod):
    """``M_c`` for each explained latent dimension ``c`` (rows in request order), then their mean (last row)."""

    name = "latent_gradcam"
    scope: ClassVar[Scope] = "layer"
    rows: ClassVar[Rows] = "latents"
    needs: ClassVar[frozenset[VAENeed]] = frozenset({"activation", "latent_grad"})

    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        a = ctx.activation(layer)  # [B, K, h, w]
        alpha = ctx.latent_gradient(layer).mean(dim=(-2, -1))  # [L, B, K]
        maps = torch.relu(torch.einsum("lbk,bkhw->lbhw", alpha, a))
        return torch.cat([maps, maps.mean(dim=0, keepdim=True)], dim=0)
