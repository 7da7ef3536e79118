"""Grad-CAM (Selvaraju et al. 2017): channel weights are the spatially averaged gradients."""

from __future__ import annotations

from torch import Tensor

from handlers.engine.methods._cam_base import WeightedCam

__all__ = ["GradCam"]


class GradCam(WeightedCam):
    """``ReLU(sum_c mean_hw(dY/dA_c) A_c)``."""

    name = "gradcam"

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient.mean(dim=(-2, -1))
