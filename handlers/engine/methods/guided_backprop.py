"""Guided backpropagation (Springenberg et al. 2015): only positive gradients pass ReLUs that were active."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost

__all__ = ["GuidedBackprop"]


class GuidedBackprop(Method):
    """Input gradient with ``ReLU`` backward replaced by ``relu(grad_in)`` (ReLU6: positive where ``0 < x < 6``)."""

    name = "guided_backprop"
    scope: ClassVar[Scope] = "input"
    needs: ClassVar[frozenset[Need]] = frozenset({"guided_grad"})
    cost: ClassVar[Cost] = Cost(backwards=1)

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        return ctx.input_gradient("guided")
