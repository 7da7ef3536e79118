"""HiResCAM (Draelos & Carin 2020): the element-wise product of gradients and activations, summed over channels."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost

__all__ = ["HiResCam"]


class HiResCam(Method):
    """``ReLU(sum_c g_c * A_c)`` per position: Grad-CAM without the spatial averaging of the gradients.

    For a layer followed by global average pooling and one linear layer the map is exactly the class's share of each
    position in the logit (the paper's faithfulness property), up to the ReLU.
    """

    name = "hirescam"
    scope: ClassVar[Scope] = "layer"
    needs: ClassVar[frozenset[Need]] = frozenset({"activation", "layer_grad"})
    cost: ClassVar[Cost] = Cost(backwards=1)  # the shared plain backward pass

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        return torch.relu((ctx.layer_gradient(layer) * ctx.activation(layer)).sum(dim=2))
