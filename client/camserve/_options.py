"""The keyword options of ``explain`` and ``explain_many``: declared once for both clients, and parsed once.

The clients take them as ``**options: Unpack[...]`` of the typed dicts below (PEP 692; ``typing.Unpack`` exists on
Python 3.11, so the SDK needs no ``typing_extensions``), so type checkers and IDEs see every keyword with its type,
and a caller writes exactly the keywords :meth:`camserve.Client.explain` documents. At run time an unknown keyword
is a ``TypeError``, as it is for any Python function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TypedDict

from camserve._insight import Consistency, FeatureMaps
from camserve._method_options import METHOD_OPTIONS
from camserve._request import ExplainOptions, RegionLike, TargetLike
from camserve.errors import InvalidArgument


class ExplainArgs(TypedDict, total=False):
    """The options ``explain`` and ``explain_many`` share; :meth:`camserve.Client.explain` documents each one."""

    version: str
    methods: Sequence[str] | str | None
    layers: Sequence[str] | str | None
    target: TargetLike | None
    top_k: int | None
    regions: Sequence[RegionLike] | None
    encoding: str | None
    resolution: str | None
    reconstruction: bool
    top_predictions: int | None
    steps: int | None
    rule: str | None
    baseline: str | None
    samples: int | None
    noise: float | None
    seed: int | None
    feature_maps: int | FeatureMaps | None
    consistency: bool | Consistency | None
    strict: bool
    timeout: float | None
    headers: Mapping[str, str] | None


class ExplainOneArgs(ExplainArgs, total=False):
    """The options of ``explain``: the shared ones and the request's id."""

    request_id: str | None


class ExplainManyArgs(ExplainArgs, total=False):
    """The options of ``explain_many``: the shared ones and how many images travel at once."""

    concurrency: int
    batch_size: int


@dataclasses.dataclass(frozen=True)
class ExplainCall:
    """One call's options, validated: what goes into every request, and how the call runs.

    Attributes:
        version: The model version (``""``: the default one).
        options: The validated request options (methods, layers, target, regions, output).
        strict: Raise the first failed image's error instead of returning it.
        timeout: Deadline per request, seconds (None: the client's).
        headers: Extra metadata per request.
        request_id: ``explain``: the caller's id for the request (None: a random one).
        concurrency: ``explain_many``: requests in flight at most.
        batch_size: ``explain_many``: images per request.
    """

    version: str
    options: ExplainOptions
    strict: bool
    timeout: float | None
    headers: Mapping[str, str] | None
    request_id: str | None = None
    concurrency: int = 4
    batch_size: int = 1


def check_keys(where: str, given: Mapping[str, object], allowed: type) -> None:
    """Rejects keywords the typed dict ``allowed`` does not declare, as Python does for a plain signature."""
    unknown = [key for key in given if key not in allowed.__annotations__]
    if unknown:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}")


def _shared(args: ExplainArgs) -> ExplainCall:
    options = ExplainOptions.build(
        methods=args.get("methods"),
        layers=args.get("layers"),
        target=args.get("target"),
        top_k=args.get("top_k"),
        regions=args.get("regions"),
        encoding=args.get("encoding"),
        resolution=args.get("resolution"),
        reconstruction=args.get("reconstruction", False),
        top_predictions=args.get("top_predictions"),
        method_options={k: args[k] for k in METHOD_OPTIONS if args.get(k) is not None},
        feature_maps=args.get("feature_maps"),
        consistency=args.get("consistency"),
    )
    return ExplainCall(
        version=args.get("version", ""),
        options=options,
        strict=args.get("strict", False),
        timeout=args.get("timeout"),
        headers=args.get("headers"),
    )


def explain_call(args: ExplainOneArgs) -> ExplainCall:
    """Validates the options of one ``explain`` call.

    Raises:
        TypeError: A keyword ``explain`` does not take.
        InvalidArgument: An option's value, naming it in ``field``.
    """
    check_keys("explain", args, ExplainOneArgs)
    return dataclasses.replace(_shared(args), request_id=args.get("request_id"))


def explain_many_call(args: ExplainManyArgs) -> ExplainCall:
    """Validates the options of one ``explain_many`` call (before the first image is read).

    Raises:
        TypeError: A keyword ``explain_many`` does not take.
        InvalidArgument: An option's value, naming it in ``field``.
    """
    check_keys("explain_many", args, ExplainManyArgs)
    concurrency, batch_size = args.get("concurrency", 4), args.get("batch_size", 1)
    for name, value in (("concurrency", concurrency), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgument(f"{name} must be a positive integer, got {value!r}", field=name)
    return dataclasses.replace(_shared(args), concurrency=concurrency, batch_size=batch_size)
