"""The method options of ``explain`` (``steps``, ``rule``, ``baseline``, ``samples``, ``noise``, ``seed``) as a
``MethodOptions`` message, with the checks the client alone can make (types and signs); the server checks the
model's bounds and the names of rules and baselines."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from camserve_proto.camserve.v1 import explain_pb2

from camserve.errors import InvalidArgument

__all__ = ["METHOD_OPTIONS", "method_options_message"]

METHOD_OPTIONS: Final = ("steps", "rule", "baseline", "samples", "noise", "seed")
_UINT32: Final = 2**32 - 1


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _UINT32:
        raise InvalidArgument(f"{name} must be a positive integer, got {value!r}", field=name)
    return value


def method_options_message(options: Mapping[str, object]) -> explain_pb2.MethodOptions | None:
    """The ``MethodOptions`` of the given options (``None`` when none is given).

    Raises:
        InvalidArgument: An unknown option, or a value of the wrong type or sign, naming it.
    """
    unknown = sorted(set(options) - set(METHOD_OPTIONS))
    if unknown:
        raise InvalidArgument(
            f"unknown method option {unknown[0]!r}; known: {', '.join(METHOD_OPTIONS)}", field=unknown[0]
        )
    if not options:
        return None
    msg = explain_pb2.MethodOptions()
    if "steps" in options:
        msg.steps = _count(options["steps"], "steps")
    if "samples" in options:
        msg.samples = _count(options["samples"], "samples")
    for name in ("rule", "baseline"):
        if name in options:
            value = options[name]
            if not isinstance(value, str) or not value:
                raise InvalidArgument(f"{name} must be a non-empty name, got {value!r}", field=name)
            setattr(msg, name, value)
    if "noise" in options:
        noise = options["noise"]
        if isinstance(noise, bool) or not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
            raise InvalidArgument(f"noise must be a finite number >= 0, got {noise!r}", field="noise")
        msg.noise = float(noise)
    if "seed" in options:
        seed = options["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise InvalidArgument(f"seed must be an integer in [0, 2**63), got {seed!r}", field="seed")
        msg.seed = seed
    return msg
