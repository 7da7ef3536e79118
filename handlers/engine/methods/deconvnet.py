"""Deconvnet (Zeiler & Fergus 2014): ReLU backward rectifies the incoming gradient and ignores the forward mask."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost

__all__ = ["Deconvnet"]


class Deconvnet(Method):
    """Input gradient with ``ReLU`` backward replaced by ``relu(grad_out)``."""

    name = "deconvnet"
    scope: ClassVar[Scope] = "input"
    needs: ClassVar[frozenset[Need]] = frozenset({"deconv_grad"})
    cost: ClassVar[Cost] = Cost(backwards=1)

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        return ctx.input_gradient("deconv")
