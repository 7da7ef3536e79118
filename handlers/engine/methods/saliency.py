"""Vanilla gradient (Simonyan et al. 2013), kept signed and per channel like Captum's ``Saliency(abs=False)``.

Use :func:`handlers.engine.reduce_gradient` for the paper's display (max over channels of ``|g|``).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost

__all__ = ["Saliency"]


class Saliency(Method):
    """``dY/dx``, ``[3, H, W]`` per target."""

    name = "saliency"
    scope: ClassVar[Scope] = "input"
    needs: ClassVar[frozenset[Need]] = frozenset({"input_grad"})
    cost: ClassVar[Cost] = Cost(backwards=1)

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        return ctx.input_gradient("plain")
