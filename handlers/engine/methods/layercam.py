"""LayerCAM (Jiang et al. 2021): element-wise positive gradients times activations."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost

__all__ = ["LayerCam"]


class LayerCam(Method):
    """``ReLU(sum_c ReLU(g_c) * A_c)``, per position (no spatial pooling of the weights)."""

    name = "layercam"
    scope: ClassVar[Scope] = "layer"
    needs: ClassVar[frozenset[Need]] = frozenset({"activation", "layer_grad"})
    cost: ClassVar[Cost] = Cost(backwards=1)  # the shared CAM backward pass

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        a = ctx.activation(layer)
        return torch.relu((torch.relu(ctx.layer_gradient(layer)) * a).sum(dim=2))
