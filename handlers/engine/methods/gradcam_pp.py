"""Grad-CAM++ (Chattopadhay et al. 2018), closed form of eq. 19 with the exponential-score trick, as in
pytorch-grad-cam: higher-order gradients are replaced by powers of the first gradient."""

from __future__ import annotations

import torch
from torch import Tensor

from handlers.engine.methods._cam_base import WeightedCam

__all__ = ["GradCamPlusPlus"]

_EPS = 1e-6


class GradCamPlusPlus(WeightedCam):
    """``w_c = sum_hw alpha_hw ReLU(g_hw)``, ``alpha = g^2 / (2 g^2 + sum_hw(A) g^3)`` (0 where ``g == 0``)."""

    name = "gradcam++"

    def weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        g2 = gradient.square()
        g3 = g2 * gradient
        sum_a = activation.sum(dim=(-2, -1), keepdim=True)
        alpha = g2 / (2 * g2 + sum_a * g3 + _EPS)
        alpha = torch.where(gradient != 0, alpha, torch.zeros_like(alpha))
        return (torch.relu(gradient) * alpha).sum(dim=(-2, -1))
