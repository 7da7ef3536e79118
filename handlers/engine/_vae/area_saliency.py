"""Area saliency: the gradient of a region's score (sum of the reconstruction over the region) w.r.t. the input."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine._vae._base import VAEContext, VAEMethod, VAENeed
from handlers.engine.methods import Scope, get_method

__all__ = ["AreaSaliency"]


class AreaSaliency(VAEMethod):
    """``d score_r / d x``, signed, ``[3, H, W]`` per region: the classifier ``saliency`` with regions as targets."""

    name = "area_saliency"
    scope: ClassVar[Scope] = "input"
    needs: ClassVar[frozenset[VAENeed]] = frozenset({"input_grad"})

    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        return get_method("saliency").compute(ctx, layer)
