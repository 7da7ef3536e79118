"""The parameters of the methods that drive the model themselves (Integrated Gradients, SmoothGrad, Score-CAM),
validated once per call, and what a method costs in model passes.

Names follow Captum: ``rule`` is Captum's ``method`` argument of ``IntegratedGradients.attribute``
(``riemann_right``, ``riemann_left``, ``riemann_middle``, ``riemann_trapezoid``, ``gausslegendre``).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final, Literal, get_args

from handlers.engine.errors import InvalidArgumentError

__all__ = ["BASELINES", "RULES", "Baseline", "Cost", "IntegrationRule", "MethodParams", "shared_cost"]

IntegrationRule = Literal["gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid"]
#: ``black``: zeros in the model's input space; ``blurred``: the image under a Gaussian blur (sigma = max(H, W) / 16,
#: reflected borders); ``noise``: uniform noise over the image's value range, drawn from ``seed``.
Baseline = Literal["black", "blurred", "noise"]
RULES: Final[tuple[str, ...]] = get_args(IntegrationRule)
BASELINES: Final[tuple[str, ...]] = get_args(Baseline)
_SEED_LIMIT: Final = 2**63


@dataclass(frozen=True)
class Cost:
    """Model passes beyond the prediction's forward: ``forwards`` per image (shared by all of its targets) and
    ``backwards`` per image and target (one vmapped backward serves a target row)."""

    forwards: int = 0
    backwards: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.forwards + other.forwards, self.backwards + other.backwards)

    def passes(self, images: int, targets: int) -> int:
        """Total passes for ``images`` images with ``targets`` targets each."""
        return images * (self.forwards + self.backwards * targets)


#: Backward passes of the shared needs: one plain pass serves the input and every layer gradient; one per other rule.
_SHARED_PASSES: Final = (frozenset({"input_grad", "layer_grad"}), frozenset({"guided_grad"}), frozenset({"deconv_grad"}))


def shared_cost(needs: Collection[str]) -> Cost:
    """The shared backward passes that ``needs`` asks for; needs that run no pass (and unknown ones) count 0."""
    return Cost(backwards=sum(1 for group in _SHARED_PASSES if group & set(needs)))


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
        raise InvalidArgumentError(f"{name} must be an integer in [{low}, {high}), got {value!r}", field=name)
    return value


@dataclass(frozen=True)
class MethodParams:
    """Parameters of Integrated Gradients, SmoothGrad and Score-CAM (the other methods take none).

    Attributes:
        steps: Integrated Gradients interpolation steps (Riemann rules need at least 2, as in Captum).
        rule: The integration rule, by Captum's name.
        baseline: The Integrated Gradients baseline.
        samples: SmoothGrad noisy copies per image.
        noise: SmoothGrad noise standard deviation as a fraction of the image's value range (max - min).
        seed: Seeds the SmoothGrad noise and the ``noise`` baseline; the draws do not depend on the batch.
        pass_batch: Inputs per forward of a method's own passes (a chunk that runs out of memory is halved).

    Raises:
        InvalidArgumentError: A value out of range, naming the parameter.
    """

    steps: int = 50
    rule: IntegrationRule = "gausslegendre"
    baseline: Baseline = "black"
    samples: int = 20
    noise: float = 0.15
    seed: int = 0
    pass_batch: int = 32

    def __post_init__(self) -> None:
        _int(self.steps, "steps", 1, 1 << 20)
        if self.rule not in RULES:
            raise InvalidArgumentError(f"unknown rule {self.rule!r}; one of {', '.join(RULES)}", field="rule")
        if self.rule != "gausslegendre" and self.steps < 2:
            raise InvalidArgumentError(f"{self.rule} needs steps >= 2, got {self.steps}", field="steps")
        if self.baseline not in BASELINES:
            raise InvalidArgumentError(
                f"unknown baseline {self.baseline!r}; one of {', '.join(BASELINES)}", field="baseline"
            )
        _int(self.samples, "samples", 1, 1 << 20)
        noise = self.noise
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
            raise InvalidArgumentError(f"noise must be a finite number >= 0, got {noise!r}", field="noise")
        _int(self.seed, "seed", 0, _SEED_LIMIT)
        _int(self.pass_batch, "pass_batch", 1, 1 << 20)
