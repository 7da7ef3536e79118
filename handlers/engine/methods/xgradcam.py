"""XGrad-CAM (Fu et al. 2020): gradients weighted by the normalised activations."""

from __future__ import annotations

from torch import Tensor

from handlers.engine.methods._cam_base import WeightedCam

__all__ = ["XGradCam"]

_EPS = 1e-7


class XGradCam(WeightedCam):
    """``w_c = sum_hw g_hw A_hw / (sum_hw A_hw)``."""

    name = "xgradcam"

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        sum_a = activation.sum(dim=(-2, -1), keepdim=True)
        return (gradient * activation / (sum_a + _EPS)).sum(dim=(-2, -1))
