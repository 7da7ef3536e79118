"""SmoothGrad (Smilkov et al. 2017) as a modifier of the gradient methods: the mean over noisy copies of the image.

Three registered methods, each the SmoothGrad of one base method, so a request can ask for a method and its
smoothed version at once and every map says by its name what it is: ``smoothgrad_saliency``,
``smoothgrad_guided_backprop`` (one shared forward per chunk of noisy copies serves both ReLU rules when both are
asked for) and ``smoothgrad_integrated_gradients`` (Integrated Gradients from each noisy copy, baseline from the
clean image, as Captum's ``NoiseTunnel`` over ``IntegratedGradients``). Noise: ``samples`` copies, Gaussian with
standard deviation ``noise * (max - min)`` of the image, seeded (``handlers.engine._passes.smoothgrad_noise``).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine.methods._base import GradientRule, Method, MethodContext, Need, Scope
from handlers.engine.methods._params import Cost
from handlers.engine.methods._paths import baseline_images
from handlers.engine.methods.integrated_gradients import path_integral

__all__ = ["SmoothGradGuidedBackprop", "SmoothGradIntegratedGradients", "SmoothGradSaliency"]


class _SmoothGradient(Method):
    """The mean over the noisy copies of the input gradient under ``rule``, ``[C, H, W]`` per target."""

    scope: ClassVar[Scope] = "input"
    cost: ClassVar[Cost] = Cost(forwards=1, backwards=1, per=("samples",))
    rule: ClassVar[GradientRule]

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        return ctx.passes.smooth_gradients(self.rule)


class SmoothGradSaliency(_SmoothGradient):
    """Mean of ``dY/dx`` over the noisy copies."""

    name = "smoothgrad_saliency"
    needs: ClassVar[frozenset[Need]] = frozenset({"passes", "smooth_input_grad"})
    rule: ClassVar[GradientRule] = "plain"


class SmoothGradGuidedBackprop(_SmoothGradient):
    """Mean of the guided-backprop gradient over the noisy copies (its forward shared with smoothgrad_saliency)."""

    name = "smoothgrad_guided_backprop"
    needs: ClassVar[frozenset[Need]] = frozenset({"passes", "smooth_guided_grad"})
    rule: ClassVar[GradientRule] = "guided"


class SmoothGradIntegratedGradients(Method):
    """Mean of Integrated Gradients over the noisy copies, ``[C, H, W]`` per target."""

    name = "smoothgrad_integrated_gradients"
    scope: ClassVar[Scope] = "input"
    needs: ClassVar[frozenset[Need]] = frozenset({"passes"})
    cost: ClassVar[Cost] = Cost(forwards=1, backwards=1, per=("samples", "steps"))

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        passes = ctx.passes
        x = passes.images
        noisy = passes.noisy_images().reshape(x.shape[0], -1, *x.shape[1:])
        base = baseline_images(x, passes.params.baseline, passes.black, passes.params.seed)
        return path_integral(passes, noisy, base, "SmoothGrad Integrated Gradients chunk")
