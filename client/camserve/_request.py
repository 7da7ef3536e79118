"""Builds ``camserve.v1.ExplainRequest`` messages from Python arguments, validating them on the way.

Validation here catches what the client alone can know is wrong (types, shapes, exclusive options), so users get
an :class:`~camserve.errors.InvalidArgument` naming the argument before anything is sent. What depends on the
model or on values the server checks for every caller (method and layer names, class ids, limits, region bounds)
is the server's to check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
from camserve_proto.camserve.v1 import explain_pb2

from camserve._images import to_image_message
from camserve._insight import consistency_message, feature_maps_message
from camserve._method_options import method_options_message
from camserve.errors import InvalidArgument

#: One class to explain by id or label, or several.
TargetLike: TypeAlias = "int | str | Sequence[int] | Sequence[str]"
#: A VAE region: a box ``(x0, y0, x1, y1)`` (half-open, reconstruction pixels) or a 2-D boolean mask.
RegionLike: TypeAlias = "tuple[int, int, int, int] | Sequence[int] | np.ndarray"

ENCODINGS = {
    "float16": explain_pb2.FLOAT16,
    "float32": explain_pb2.FLOAT32,
    "uint8": explain_pb2.UINT8,
    "png": explain_pb2.PNG,
}
RESOLUTIONS = {"native": explain_pb2.NATIVE, "input": explain_pb2.INPUT}
# The contract's Box coordinates are int32.
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class Input:
    """One image with per-image overrides, for calls that explain several images differently.

    Example: ``client.explain([Input(cat, target="tabby"), Input(dog, top_k=3)], model="resnet")``.

    Attributes:
        image: A path, encoded bytes, a PIL image or a numpy array (see :meth:`camserve.Client.explain`).
        id: Your id for this image, echoed in its result (default: its position as text).
        target: Classes to explain for this image only (overrides the call's ``target``/``top_k``).
        top_k: Explain this image's k best classes (exclusive with ``target``).
        regions: VAE regions for this image only (overrides the call's ``regions``).
    """

    image: object
    id: str | None = None
    target: TargetLike | None = None
    top_k: int | None = None
    regions: Sequence[RegionLike] | None = None


def target_message(target: object, top_k: object, field: str) -> explain_pb2.Target | None:
    """Converts ``target``/``top_k`` arguments into a ``Target`` message (None when both are unset)."""
    if target is not None and top_k is not None:
        raise InvalidArgument("give either target or top_k, not both", field=field)
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or int(top_k) < 1:
            raise InvalidArgument(f"top_k must be a positive integer, got {top_k!r}", field=f"{field}.top_k")
        return explain_pb2.Target(top_k=int(top_k))
    if target is None:
        return None
    items: list[object] = [target] if isinstance(target, int | str | np.integer) else list(_iterable(target, field))
    if not items:
        raise InvalidArgument("target list is empty", field=field)
    if all(isinstance(t, int | np.integer) and not isinstance(t, bool) for t in items):
        ids = [int(t) for t in items]  # type: ignore[call-overload]
        if min(ids) < 0:
            raise InvalidArgument(f"class ids must be >= 0, got {min(ids)}", field=f"{field}.class_ids")
        return explain_pb2.Target(class_ids=ids)
    if all(isinstance(t, str) for t in items):
        names = [str(t) for t in items]
        if any(not n for n in names):
            raise InvalidArgument("class names must not be empty", field=f"{field}.class_names")
        return explain_pb2.Target(class_names=names)
    raise InvalidArgument(
        f"target must be a class id, a class name, or a list of only ids or only names; got {target!r}", field=field
    )


def _iterable(value: object, field: str) -> Iterable[object]:
    if isinstance(value, np.ndarray):
        return [x.item() for x in value.ravel()]
    if isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        return value
    raise InvalidArgument(f"expected an int, a str or a list of them, got {type(value).__name__}", field=field)


def region_message(region: object, field: str) -> explain_pb2.Region:
    """Converts a box ``(x0, y0, x1, y1)`` or a 2-D boolean mask into a ``Region`` message.

    Only the argument's form is checked here (four integers that fit the wire's int32, or a 2-D boolean or 0/1
    integer array), because only the SDK knows what a Python argument was. Whether a box is ordered, non-empty and
    inside the reconstruction, and whether a mask has the reconstruction's size and selects a pixel, is the
    server's rule: it checks every caller's regions (this SDK's, REST's, raw gRPC's) with one message, and a
    rejected region is an :class:`~camserve.errors.InvalidArgument` either way (for the whole call, or for the one
    image whose :class:`Input` carried it).
    """
    if isinstance(region, np.ndarray) and region.ndim == 2:
        if region.dtype != np.bool_ and not np.issubdtype(region.dtype, np.integer):
            raise InvalidArgument(f"region masks must be boolean (or 0/1 integers), got {region.dtype}", field=field)
        mask = np.ascontiguousarray(region != 0, dtype=np.uint8)
        return explain_pb2.Region(mask=explain_pb2.Mask(height=mask.shape[0], width=mask.shape[1], data=mask.tobytes()))
    try:
        values = [v.item() if isinstance(v, np.generic) else v for v in region]  # type: ignore[attr-defined]
    except TypeError:
        values = []
    if len(values) != 4 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InvalidArgument(
            f"a region is a box (x0, y0, x1, y1) of 4 integers or a 2-D boolean mask, got {region!r}", field=field
        )
    if not all(_INT32_MIN <= v <= _INT32_MAX for v in values):
        raise InvalidArgument(f"box coordinates must fit in 32 bits, got {tuple(values)}", field=field)
    x0, y0, x1, y1 = values
    return explain_pb2.Region(box=explain_pb2.Box(x0=x0, y0=y0, x1=x1, y1=y1))


def regions_messages(regions: object, field: str) -> list[explain_pb2.Region]:
    """Converts a list of regions; a single box or mask is accepted as a list of one."""
    if regions is None:
        return []
    if isinstance(regions, np.ndarray) and regions.ndim == 2:
        return [region_message(regions, f"{field}[0]")]
    if isinstance(regions, tuple) and len(regions) == 4 and all(isinstance(v, int) for v in regions):
        return [region_message(regions, f"{field}[0]")]
    if not isinstance(regions, Iterable):
        raise InvalidArgument(f"regions must be a list of boxes or masks, got {type(regions).__name__}", field=field)
    out = [region_message(r, f"{field}[{i}]") for i, r in enumerate(regions)]
    if not out:
        raise InvalidArgument("regions list is empty (leave regions unset for the default)", field=field)
    return out


def _names(values: object, field: str) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(_iterable(values, field))
    if not all(isinstance(v, str) and v for v in items):
        raise InvalidArgument(f"{field} must be a name or a list of non-empty names, got {values!r}", field=field)
    return [str(v) for v in items]


def output_message(
    encoding: str | None, resolution: str | None, reconstruction: bool, top_predictions: int | None
) -> explain_pb2.OutputOptions:
    """Converts output options into an ``OutputOptions`` message."""
    out = explain_pb2.OutputOptions(include_reconstruction=bool(reconstruction))
    if encoding is not None:
        if encoding not in ENCODINGS:
            raise InvalidArgument(f"encoding must be one of {sorted(ENCODINGS)}, got {encoding!r}", field="encoding")
        out.encoding = ENCODINGS[encoding]
    if resolution is not None:
        if resolution not in RESOLUTIONS:
            raise InvalidArgument(
                f"resolution must be one of {sorted(RESOLUTIONS)}, got {resolution!r}", field="resolution"
            )
        out.resolution = RESOLUTIONS[resolution]
    if top_predictions is not None:
        if isinstance(top_predictions, bool) or not isinstance(top_predictions, int) or top_predictions < 1:
            raise InvalidArgument(
                f"top_predictions must be a positive integer, got {top_predictions!r}", field="top_predictions"
            )
        out.top_predictions = top_predictions
    return out


@dataclass(frozen=True)
class ExplainOptions:
    """The per-call options of ``explain``, validated once and reused for every batch of ``explain_many``."""

    methods: tuple[str, ...]
    layers: tuple[str, ...]
    target: explain_pb2.Target | None
    regions: tuple[explain_pb2.Region, ...]
    output: explain_pb2.OutputOptions
    method_options: explain_pb2.MethodOptions | None = None
    feature_maps: explain_pb2.FeatureMapOptions | None = None
    consistency: explain_pb2.ConsistencyOptions | None = None

    @classmethod
    def build(
        cls,
        *,
        methods: object = None,
        layers: object = None,
        target: object = None,
        top_k: object = None,
        regions: object = None,
        encoding: str | None = None,
        resolution: str | None = None,
        reconstruction: bool = False,
        top_predictions: int | None = None,
        method_options: Mapping[str, object] | None = None,
        feature_maps: object = None,
        consistency: object = None,
    ) -> ExplainOptions:
        """Validates the call's arguments; raises InvalidArgument naming the bad one."""
        return cls(
            methods=tuple(_names(methods, "methods")),
            layers=tuple(_names(layers, "layers")),
            target=target_message(target, top_k, "target"),
            regions=tuple(regions_messages(regions, "regions")),
            output=output_message(encoding, resolution, reconstruction, top_predictions),
            method_options=method_options_message(method_options or {}),
            feature_maps=feature_maps_message(feature_maps),
            consistency=consistency_message(consistency),
        )


def image_messages(images: Sequence[object], start: int = 0) -> list[explain_pb2.Image]:
    """Converts images (or :class:`Input` wrappers) into ``Image`` messages; ``start`` numbers them in errors."""
    out = []
    for offset, item in enumerate(images):
        index = start + offset
        field = f"images[{index}]"
        spec = item if isinstance(item, Input) else Input(item)
        message = to_image_message(spec.image, field)
        message.id = spec.id if spec.id is not None else str(index)
        per_image = target_message(spec.target, spec.top_k, f"{field}.target")
        if per_image is not None:
            message.target.CopyFrom(per_image)
        if spec.regions is not None:
            message.regions.extend(regions_messages(spec.regions, f"{field}.regions"))
        out.append(message)
    return out


def build_request(
    images: Sequence[explain_pb2.Image], options: ExplainOptions, request_id: str = ""
) -> explain_pb2.ExplainRequest:
    """Assembles one ``ExplainRequest`` from converted images and validated options."""
    request = explain_pb2.ExplainRequest(
        images=images,
        methods=options.methods,
        layers=options.layers,
        regions=options.regions,
        output=options.output,
        request_id=request_id,
    )
    if options.target is not None:
        request.target.CopyFrom(options.target)
    if options.method_options is not None:
        request.options.CopyFrom(options.method_options)
    if options.feature_maps is not None:
        request.feature_maps.CopyFrom(options.feature_maps)
    if options.consistency is not None:
        request.consistency.CopyFrom(options.consistency)
    return request
