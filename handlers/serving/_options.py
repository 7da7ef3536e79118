"""``MethodOptions`` (the parameters of Integrated Gradients, SmoothGrad and Score-CAM) validated into the engine's
:class:`~handlers.engine.MethodParams` within the model's bounds.

Every bad value is ``INVALID_ARGUMENT`` naming its field (``options.steps``, ``options.noise``, ...): zero or more
steps or samples than the model's bound (``limits.max_steps`` / ``limits.max_samples``), a negative or non-finite
noise, an unknown rule or baseline. Unset fields take the engine's defaults; the Score-CAM channel bound comes from
``limits.max_channels``.
"""

from __future__ import annotations

import dataclasses
import math

from camserve_proto.camserve.v1 import explain_pb2

from handlers.engine import MethodParams
from handlers.engine.errors import InvalidArgumentError
from handlers.engine.methods._params import BASELINES, RULES
from handlers.serving._config import Limits

__all__ = ["parse_options"]

_DEFAULTS = MethodParams()


def _bounded(value: int, name: str, bound: int, limit_key: str) -> int:
    if not 1 <= value <= bound:
        raise InvalidArgumentError(
            f"options.{name} is {value}; it must be between 1 and {bound} for this model (limits.{limit_key})",
            field=f"options.{name}",
        )
    return value


def parse_options(msg: explain_pb2.MethodOptions | None, limits: Limits) -> MethodParams:
    """The engine parameters of a request's ``options`` (``None``: unset, the defaults).

    Raises:
        InvalidArgumentError: A value out of range or unknown, with ``field`` ``"options.<name>"``.
    """
    steps = min(_DEFAULTS.steps, limits.max_steps)
    samples = min(_DEFAULTS.samples, limits.max_samples)
    rule, baseline, noise, seed = _DEFAULTS.rule, _DEFAULTS.baseline, _DEFAULTS.noise, _DEFAULTS.seed
    if msg is not None:
        if msg.HasField("steps"):
            steps = _bounded(int(msg.steps), "steps", limits.max_steps, "max_steps")
        if msg.HasField("samples"):
            samples = _bounded(int(msg.samples), "samples", limits.max_samples, "max_samples")
        if msg.rule:
            if msg.rule not in RULES:
                raise InvalidArgumentError(
                    f"unknown options.rule {msg.rule[:40]!r}; one of {', '.join(RULES)}", field="options.rule"
                )
            rule = msg.rule  # type: ignore[assignment]
        if msg.baseline:
            if msg.baseline not in BASELINES:
                raise InvalidArgumentError(
                    f"unknown options.baseline {msg.baseline[:40]!r}; one of {', '.join(BASELINES)}",
                    field="options.baseline",
                )
            baseline = msg.baseline  # type: ignore[assignment]
        if msg.HasField("noise"):
            noise = float(msg.noise)
            if not math.isfinite(noise) or noise < 0:
                raise InvalidArgumentError(
                    f"options.noise must be a finite number >= 0 (a fraction of the image's value range), got {noise}",
                    field="options.noise",
                )
        seed = int(msg.seed)
    try:
        return dataclasses.replace(
            _DEFAULTS,
            steps=steps,
            rule=rule,
            baseline=baseline,
            samples=samples,
            noise=noise,
            seed=seed,
            max_channels=limits.max_channels,
        )
    except InvalidArgumentError as exc:  # the engine's own rules (Riemann rules need 2 steps, the seed's range)
        raise InvalidArgumentError(exc.message, field=f"options.{exc.field}") from exc
