"""CAM (Zhou et al. 2016) for models ending in global average pooling + one linear layer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, ModelFacts, Need, Scope

__all__ = ["Cam"]


class Cam(Method):
    """``M_c = sum_k W[c, k] A_k`` with the head's weights; raw and signed as in the paper (no ReLU, no bias).

    Needs no backward pass. On such models ``CAM == h * w * (Grad-CAM before its ReLU)``, which the tests check.
    """

    name = "cam"
    scope: ClassVar[Scope] = "layer"
    needs: ClassVar[frozenset[Need]] = frozenset({"activation", "head_weights"})

    def applicable(self, facts: ModelFacts) -> bool:
        return bool(facts.default_layers) and all(layer in facts.gap_linear_layers for layer in facts.default_layers)

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        return torch.einsum("kbc,bchw->kbhw", ctx.head_weights(layer), ctx.activation(layer))
