"""The REST form fields of ``MethodOptions`` (``curl -F steps=100 -F baseline=blurred ...``) as the message.

Text is converted here (integers, a number); the ranges are checked by :mod:`handlers.serving._options` like any
other request's, so REST and gRPC callers get the same errors (field ``options.<name>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from camserve_proto.camserve.v1 import explain_pb2

from handlers.engine.errors import InvalidArgumentError

__all__ = ["OPTION_FIELDS", "options_from_form"]

OPTION_FIELDS: Final = ("steps", "rule", "baseline", "samples", "noise", "seed")


def _int(text: str, name: str, *, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError as exc:
        raise InvalidArgumentError(f"{name} must be an integer, got {text[:40]!r}", field=f"options.{name}") from exc
    if not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be in [{low}, {high}], got {value}", field=f"options.{name}")
    return value


def options_from_form(params: Mapping[str, str]) -> explain_pb2.MethodOptions | None:
    """The ``MethodOptions`` of a REST call's form fields, ``None`` when it has none.

    Raises:
        InvalidArgumentError: A field that is not a number where one is needed, or outside the wire's range.
    """
    if not any(name in params for name in OPTION_FIELDS):
        return None
    msg = explain_pb2.MethodOptions()
    if "steps" in params:
        msg.steps = _int(params["steps"], "steps", low=0, high=2**32 - 1)
    if "samples" in params:
        msg.samples = _int(params["samples"], "samples", low=0, high=2**32 - 1)
    if "seed" in params:
        msg.seed = _int(params["seed"], "seed", low=0, high=2**64 - 1)
    if "noise" in params:
        try:
            msg.noise = float(params["noise"].strip())
        except ValueError as exc:
            raise InvalidArgumentError(
                f"noise must be a number, got {params['noise'][:40]!r}", field="options.noise"
            ) from exc
    msg.rule = params.get("rule", "").strip()
    msg.baseline = params.get("baseline", "").strip()
    return msg
