"""The parameters of the methods that drive the model themselves (Integrated Gradients, SmoothGrad, Score-CAM),
validated once per call, and what a method costs in model passes.

Names follow Captum: ``rule`` is Captum's ``method`` argument of ``IntegratedGradients.attribute``
(``riemann_right``, ``riemann_left``, ``riemann_middle``, ``riemann_trapezoid``, ``gausslegendre``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args

from handlers.engine.errors import InvalidArgumentError

__all__ = ["BASELINES", "RULES", "UNITS", "Baseline", "Cost", "IntegrationRule", "MethodParams", "Unit"]

IntegrationRule = Literal["gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid"]
#: ``black``: a black image (the explainer's ``black`` pixel, zeros by default); ``blurred``: the image under a
#: Gaussian blur (sigma = max(H, W) / 16, reflected borders); ``noise``: uniform noise over the image's value range,
#: drawn from ``seed``.
Baseline = Literal["black", "blurred", "noise"]
#: What a method's passes scale with: Integrated Gradients ``steps``, SmoothGrad ``samples``, Score-CAM ``channels``
#: (of the explained layer).
Unit = Literal["steps", "samples", "channels"]
RULES: Final[tuple[str, ...]] = get_args(IntegrationRule)
BASELINES: Final[tuple[str, ...]] = get_args(Baseline)
UNITS: Final[tuple[str, ...]] = get_args(Unit)
#: Engine-wide sanity bounds; a server sets lower ones per model.
MAX_STEPS: Final = 1 << 14
MAX_SAMPLES: Final = 1 << 12
_SEED_LIMIT: Final = 2**63


@dataclass(frozen=True)
class Cost:
    """Model passes a method runs beyond the prediction's forward, declared on the method as data.

    Per image: ``fixed_forwards + forwards * units`` forward inputs and ``backwards * units`` backward passes per
    target, where ``units`` is the product of the ``per`` quantities (1 when ``per`` is empty). Integrated Gradients
    is ``Cost(forwards=1, backwards=1, per=("steps",), fixed_forwards=1)`` (one interpolation point per step, the
    baseline once); Grad-CAM is ``Cost(backwards=1)`` (its backward is shared with the other CAM methods and
    saliency).
    """

    forwards: int = 0
    backwards: int = 0
    per: tuple[Unit, ...] = ()
    fixed_forwards: int = 0

    def units(self, values: Mapping[str, int]) -> int:
        """The product of the ``per`` quantities in ``values`` (1 when ``per`` is empty)."""
        return math.prod(int(values[u]) for u in self.per)

    def passes(self, values: Mapping[str, int], targets: int) -> int:
        """Forward inputs plus backward passes for one image with ``targets`` targets."""
        units = self.units(values)
        return self.fixed_forwards + self.forwards * units + self.backwards * units * targets


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be an integer in [{low}, {high}], got {value!r}", field=name)
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
        seed: Seeds the SmoothGrad noise and the ``noise`` baseline; an image's draws depend only on the seed and
            the image (never on the batch it is in).
        pass_batch: Inputs per forward of a method's own passes (a chunk that runs out of memory is halved).
        max_channels: Score-CAM runs one forward per channel; a layer with more channels is refused before any.

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
    max_channels: int = 4096

    def __post_init__(self) -> None:
        _int(self.steps, "steps", 1, MAX_STEPS)
        if self.rule not in RULES:
            raise InvalidArgumentError(f"unknown rule {self.rule!r}; one of {', '.join(RULES)}", field="rule")
        if self.rule != "gausslegendre" and self.steps < 2:
            raise InvalidArgumentError(f"{self.rule} needs steps >= 2, got {self.steps}", field="steps")
        if self.baseline not in BASELINES:
            raise InvalidArgumentError(
                f"unknown baseline {self.baseline!r}; one of {', '.join(BASELINES)}", field="baseline"
            )
        _int(self.samples, "samples", 1, MAX_SAMPLES)
        noise = self.noise
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
            raise InvalidArgumentError(f"noise must be a finite number >= 0, got {noise!r}", field="noise")
        _int(self.seed, "seed", 0, _SEED_LIMIT - 1)
        _int(self.pass_batch, "pass_batch", 1, 1 << 16)
        _int(self.max_channels, "max_channels", 1, 1 << 20)

    def units(self, channels: int = 0) -> dict[str, int]:
        """The values of every :data:`Unit` for these parameters (``channels``: of the explained layer)."""
        return {"steps": self.steps, "samples": self.samples, "channels": channels}
