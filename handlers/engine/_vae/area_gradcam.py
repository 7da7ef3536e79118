"""Area Grad-CAM: Grad-CAM (Selvaraju 2017) of a region's score on an encoder layer."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine._vae._base import VAEContext, VAEMethod, VAENeed
from handlers.engine.methods import Scope

__all__ = ["AreaGradCam"]


class AreaGradCam(VAEMethod):
    """``ReLU(sum_k mean_hw(d score_r / dA_k) A_k)`` on the layer's grid, per region; several layers = a sweep over
    the encoder's depth from the same forward and backward passes."""

    name = "area_gradcam"
    scope: ClassVar[Scope] = "layer"
    needs: ClassVar[frozenset[VAENeed]] = frozenset({"activation", "layer_grad"})

    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        return ctx.result("gradcam", layer)
