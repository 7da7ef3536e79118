"""Guided area saliency: the region score's input gradient under the guided-backprop ReLU rule (Springenberg 2015)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine._vae._base import VAEContext, VAEMethod, VAENeed
from handlers.engine.methods import Scope, get_method

__all__ = ["AreaGuided"]


class AreaGuided(VAEMethod):
    """Guided backprop of ``score_r`` to the input, ``[3, H, W]`` per region (the rule is applied by graph hooks on
    every ReLU of encoder and decoder; sigmoid and other activations keep their normal rule)."""

    name = "area_guided"
    scope: ClassVar[Scope] = "input"
    needs: ClassVar[frozenset[VAENeed]] = frozenset({"guided_grad"})

    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        return get_method("guided_backprop").compute(ctx, layer)
