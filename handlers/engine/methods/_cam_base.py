"""Shared shape of the Grad-CAM family: ``ReLU(sum_c w_c A_c)`` with per-method channel weights ``w``."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost

__all__ = ["WeightedCam"]


class WeightedCam(Method):
    """A CAM whose map is the ReLU of channel-weighted activations; subclasses implement :meth:`weights`."""

    scope: ClassVar[Scope] = "layer"
    needs: ClassVar[frozenset[Need]] = frozenset({"activation", "layer_grad"})
    cost: ClassVar[Cost] = Cost(backwards=1)  # shared by every CAM method, layer and saliency of the call

    @abstractmethod
    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        """Channel weights ``[k, B, C]`` from activations ``[B, C, h, w]`` and gradients ``[k, B, C, h, w]``."""

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        a = ctx.activation(layer)
        w = self.weights(a, ctx.layer_gradient(layer))
        return torch.relu(torch.einsum("kbc,bchw->kbhw", w, a))
