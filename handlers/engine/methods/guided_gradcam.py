"""Guided Grad-CAM (Selvaraju et al. 2017), composed from the two registered methods as Captum does."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Scope
from handlers.engine.methods._params import Cost

__all__ = ["GuidedGradCam"]


class GuidedGradCam(Method):
    """Guided backprop ``[k, B, 3, H, W]`` times the layer's Grad-CAM upsampled bilinearly to ``(H, W)``."""

    name = "guided_gradcam"
    scope: ClassVar[Scope] = "layer"
    depends_on = ("gradcam", "guided_backprop")
    cost: ClassVar[Cost] = Cost(backwards=2)  # the plain and the guided pass, shared with its parts

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        cam = ctx.result("gradcam", layer)
        guided = ctx.result("guided_backprop", "")
        k, b, h, w = cam.shape
        up = F.interpolate(cam.reshape(k * b, 1, h, w), size=ctx.input_size, mode="bilinear", align_corners=False)
        return guided * up.reshape(k, b, 1, *ctx.input_size)
