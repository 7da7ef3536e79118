"""Integrated Gradients' straight-line path: the baselines it starts from and the integration rules along it.

The rules are Captum's (``captum.attr._utils.approximation_methods``): the points ``alpha`` in [0, 1] and their
weights for ``steps`` evaluations, Riemann sums (left, right, middle, trapezoid) or Gauss-Legendre quadrature
(nodes and weights from the Golub-Welsch eigenproblem in float64, mapped from [-1, 1] to [0, 1]).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from handlers.engine.methods._params import Baseline, IntegrationRule

__all__ = ["baseline_images", "blurred", "rule_points"]


def rule_points(rule: IntegrationRule, steps: int) -> tuple[Tensor, Tensor]:
    """``(alphas, weights)``, float64 ``[steps]`` each: the integral of ``f`` over [0, 1] is ``sum w_i f(a_i)``."""
    n = steps
    if rule == "gausslegendre":
        i = torch.arange(1, n, dtype=torch.float64)
        off = i / torch.sqrt(4 * i * i - 1)
        jacobi = torch.diag(off, 1) + torch.diag(off, -1)
        nodes, vectors = torch.linalg.eigh(jacobi)
        return 0.5 * (1 + nodes), vectors[0] ** 2  # weights 2 v0^2 on [-1, 1], halved on [0, 1]
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "riemann_trapezoid":
        weights[0] /= 2
        weights[-1] /= 2
        return torch.linspace(0, 1, n, dtype=torch.float64), weights
    if rule == "riemann_left":
        return torch.linspace(0, 1 - 1 / n, n, dtype=torch.float64), weights
    if rule == "riemann_middle":
        return torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n, dtype=torch.float64), weights
    return torch.linspace(1 / n, 1, n, dtype=torch.float64), weights  # riemann_right


def blurred(images: Tensor) -> Tensor:
    """``images`` ``[B, C, H, W]`` under a separable Gaussian blur, sigma = max(H, W) / 16, reflected borders.

    The kernel reaches 3 sigma each side, capped where reflection stops being defined (one pixel short of the
    image), so any image size works.
    """
    h, w = int(images.shape[-2]), int(images.shape[-1])
    sigma = max(h, w) / 16.0
    out = images.float()
    for dim, size in ((2, h), (3, w)):
        radius = min(math.ceil(3 * sigma), size - 1)
        if radius < 1:
            continue
        t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = kernel / kernel.sum()
        c = int(out.shape[1])
        if dim == 2:
            weight, pad = kernel.reshape(1, 1, -1, 1), (0, 0, radius, radius)
        else:
            weight, pad = kernel.reshape(1, 1, 1, -1), (radius, radius, 0, 0)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), weight.expand(c, 1, *weight.shape[2:]), groups=c)
    return out.to(images.dtype)


def baseline_images(images: Tensor, baseline: Baseline, black: Tensor, seed: int) -> Tensor:
    """The baseline of each image ``[B, C, H, W]``.

    Args:
        images: The explained batch.
        baseline: ``black`` (``black`` everywhere), ``blurred`` (:func:`blurred`), or ``noise`` (uniform over each
            image's [min, max], from a CPU generator seeded with ``seed``: the draws depend only on the seed and the
            image's shape).
        black: The model-input value of a black pixel, ``[1, C, 1, 1]``.
        seed: Seeds the ``noise`` baseline.
    """
    if baseline == "black":
        return black.expand_as(images).clone()
    if baseline == "blurred":
        return blurred(images)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    uniform = torch.rand(tuple(images.shape[1:]), generator=generator, dtype=torch.float32).to(images)
    lo = images.amin(dim=(1, 2, 3), keepdim=True)
    hi = images.amax(dim=(1, 2, 3), keepdim=True)
    return lo + (hi - lo) * uniform
