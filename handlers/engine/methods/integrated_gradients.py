"""Integrated Gradients (Sundararajan et al. 2017): the path integral of the input gradient from a baseline to the
image, times the image minus the baseline; with its completeness error.

``attr = (x - x') * sum_i w_i dY/dx (x' + a_i (x - x'))`` over the rule's points ``(a_i, w_i)`` (Captum's
``IntegratedGradients`` with the same baseline, ``n_steps`` and ``method``). Completeness says the attributions sum
to ``Y(x) - Y(x')``; the relative error ``|sum attr - (Y(x) - Y(x'))| / |Y(x) - Y(x')|`` is reported with every map
(``Explanation.completeness_errors``) so a caller knows when to raise the steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from handlers.engine.methods._base import Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost
from handlers.engine.methods._paths import baseline_images, rule_points

__all__ = ["IntegratedGradients", "completeness_error", "path_integral"]

if TYPE_CHECKING:
    from handlers.engine._passes import ModelPasses


def path_integral(passes: ModelPasses, inputs: Tensor, base: Tensor, what: str) -> Tensor:
    """Integrated Gradients of ``inputs`` ``[B, S, C, H, W]`` (``S`` versions of each image, e.g. SmoothGrad's
    noisy copies) from ``base`` ``[B, C, H, W]``, averaged over the versions: ``[k, B, C, H, W]``.

    The ``B * S * steps`` interpolation points are built chunk by chunk and batched through the model.
    """
    p = passes.params
    alphas, weights = (t.to(device=inputs.device, dtype=inputs.dtype) for t in rule_points(p.rule, p.steps))
    versions, steps = int(inputs.shape[1]), p.steps

    def make(start: int, stop: int) -> tuple[Tensor, Tensor]:
        n = torch.arange(start, stop, device=inputs.device)
        b, s, t = n // (versions * steps), (n // steps) % versions, n % steps
        delta = inputs[b, s] - base[b]
        return base[b] + alphas[t].view(-1, 1, 1, 1) * delta, weights[t].view(-1, 1, 1, 1) * delta / versions

    sums, _ = passes.gradient_sums(versions * steps, make, ("plain",), what)
    return sums["plain"]


def completeness_error(attributions: Tensor, gap: Tensor) -> Tensor:
    """``|sum attr - gap| / |gap|`` per target and image ``[k, B]`` (0 when both are 0, inf when only the gap is)."""
    total = attributions.flatten(2).sum(2).double()
    gap = gap.double()
    miss = (total - gap).abs()
    safe = torch.where(gap != 0, gap.abs(), torch.ones_like(gap))
    err = torch.where(gap != 0, miss / safe, torch.where(miss == 0, 0.0, float("inf")))
    return err.float()


class IntegratedGradients(Method):
    """``[C, H, W]`` per target; ``completeness_error`` reported beside each map."""

    name = "integrated_gradients"
    scope: ClassVar[Scope] = "input"
    needs: ClassVar[frozenset[Need]] = frozenset({"passes"})
    cost: ClassVar[Cost] = Cost(forwards=1, backwards=1, per=("steps",), fixed_forwards=1)

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        passes = ctx.passes
        x = passes.images
        base = baseline_images(x, passes.params.baseline, passes.black, passes.params.seed)
        attributions = path_integral(passes, x.unsqueeze(1), base, "Integrated Gradients chunk")
        at_base = passes.scores(1, lambda start, stop: base[start:stop], "baseline")[..., 0]
        error = completeness_error(attributions, passes.input_scores() - at_base)
        ctx.report(self.name, layer, "completeness_error", error)
        return attributions
