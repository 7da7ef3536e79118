"""Area Layer-CAM: Layer-CAM (Jiang et al. 2021) of a region's score on an encoder layer.

Where Grad-CAM weighs each channel by its gradient *averaged over the whole grid*, Layer-CAM weighs every position
by its own positive gradient. A region's score only has gradient near the region (the encoder and decoder are local),
so the position-wise weights keep that locality, while Grad-CAM's averaged weights spread it over every position
where the channel is active — which, for a VAE that must encode the whole image, is everywhere. Measured on the
shapes VAE in ``handlers/engine/_vae/README.md``.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine._vae._base import VAEContext, VAEMethod, VAENeed
from handlers.engine.methods import Scope

__all__ = ["AreaLayerCam"]


class AreaLayerCam(VAEMethod):
    """``ReLU(sum_k ReLU(d score_r / dA_k) * A_k)`` per position of the layer's grid, per region."""

    name = "area_layercam"
    scope: ClassVar[Scope] = "layer"
    needs: ClassVar[frozenset[VAENeed]] = frozenset({"activation", "layer_grad"})

    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        return ctx.result("layercam", layer)
