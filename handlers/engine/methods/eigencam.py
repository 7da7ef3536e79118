"""EigenCAM (Muhammad & Yeasin 2020): the activations projected on their first principal component; no target needed.

As pytorch-grad-cam's ``get_2d_projection``: per image, the ``[h*w, C]`` activation matrix is centred over the
positions, its first right singular vector ``v`` is taken from an SVD, and the map is ``ReLU(A_centred @ v)``. A
singular vector is only defined up to its sign, and LAPACK's choice is arbitrary (numpy's full and reduced SVDs of the
same matrix disagree on it for about 7% of random matrices), so the sign is fixed as scikit-learn's ``svd_flip``
fixes it: the projection's entry of largest magnitude is positive (the most extreme position is the salient one).
Orienting by the total activation instead would fail on LayerNorm outputs (a ViT's token layers), where
``sum_c A_c`` is the same at every position. The map does not depend on the target: every target row is the same.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Need, Scope

__all__ = ["EigenCam", "first_component_projection"]


def first_component_projection(activation: Tensor) -> Tensor:
    """``[B, C, h, w]`` activations -> ``[B, h, w]`` projections on the first principal component (signed)."""
    b, c, h, w = activation.shape
    flat = activation.reshape(b, c, h * w).transpose(1, 2).double()  # [B, hw, C]; double: SVD of near-ties is stable
    centred = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = torch.einsum("bnc,bc->bn", centred, vh[:, 0, :])
    extreme = projection.gather(1, projection.abs().argmax(dim=1, keepdim=True))
    projection = projection * torch.where(extreme < 0, -1.0, 1.0).to(projection)
    return projection.reshape(b, h, w).to(activation.dtype)


class EigenCam(Method):
    """``ReLU(A_centred @ v_1)``, the same map for every target (the backward pass is not needed)."""

    name = "eigencam"
    scope: ClassVar[Scope] = "layer"
    needs: ClassVar[frozenset[Need]] = frozenset({"activation"})

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        cam = torch.relu(first_component_projection(ctx.activation(layer)))
        return cam.unsqueeze(0).expand(ctx.rows, *cam.shape)
