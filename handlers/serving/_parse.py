"""Request validation: ``ExplainRequest`` bytes in, a :class:`~handlers.serving._types.ParsedRequest` out.

Methods and layers are resolved against the model's :class:`~handlers.serving._types.Capabilities`, targets and
regions checked and normalised, output options and limits enforced, and every image decoded and preprocessed on its
own. Request-level problems raise a :class:`~handlers.engine.errors.CamserveError` with the field path at fault
(``"layers[1]"``, ``"target.class_names[0]"``); a bad image becomes an :class:`~handlers.serving._types.ImageFailure`
for that image only (``"images[2].encoded"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import torch
from camserve_proto.camserve.v1 import explain_pb2
from google.protobuf.message import DecodeError

from handlers.engine import check_region
from handlers.engine.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from handlers.preprocess import Preprocessor
from handlers.serving._errors import to_camserve_error
from handlers.serving._images import PixelDType, decode_image, pixels_to_tensor
from handlers.serving._maps import EncodingName
from handlers.serving._options import parse_options
from handlers.serving._parse_insight import parse_insight
from handlers.serving._types import (
    DEFAULT_TOP_PREDICTIONS,
    Capabilities,
    ImageFailure,
    ImageInput,
    OutputSpec,
    ParsedRequest,
    RegionSpec,
    Resolution,
    TargetSpec,
)

__all__ = ["MAX_ID_LENGTH", "decode_request", "parse_message", "parse_request"]

MAX_ID_LENGTH: Final = 256

_ENCODINGS: Final[dict[int, EncodingName]] = {
    explain_pb2.ENCODING_UNSPECIFIED: "FLOAT16",
    explain_pb2.FLOAT16: "FLOAT16",
    explain_pb2.FLOAT32: "FLOAT32",
    explain_pb2.UINT8: "UINT8",
    explain_pb2.PNG: "PNG",
}
_PIXEL_DTYPES: Final[dict[int, PixelDType]] = {
    explain_pb2.FLOAT32: "float32",
    explain_pb2.FLOAT16: "float16",
    explain_pb2.UINT8: "uint8",
}
_RESOLUTIONS: Final[dict[int, Resolution]] = {
    explain_pb2.RESOLUTION_UNSPECIFIED: "NATIVE",
    explain_pb2.NATIVE: "NATIVE",
    explain_pb2.INPUT: "INPUT",
}


def parse_request(data: bytes | bytearray, caps: Capabilities, pre: Preprocessor) -> ParsedRequest:
    """Parses and validates ``ExplainRequest`` bytes; see :func:`parse_message`.

    Raises:
        InvalidArgumentError: Not a valid ExplainRequest (field ``"request"``), or a request-level problem.
        NotFoundError: Unknown layer or class name.
        ResourceExhaustedError: Over a request limit.
    """
    return parse_message(decode_request(data), caps, pre)


def decode_request(data: bytes | bytearray) -> explain_pb2.ExplainRequest:
    """Parses ``ExplainRequest`` bytes.

    Raises:
        InvalidArgumentError: The bytes are not a valid message (field ``"request"``).
    """
    msg = explain_pb2.ExplainRequest()
    try:
        msg.ParseFromString(bytes(data))
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidArgumentError("the request is not a valid camserve.v1.ExplainRequest", field="request") from exc
    return msg


def parse_message(msg: explain_pb2.ExplainRequest, caps: Capabilities, pre: Preprocessor) -> ParsedRequest:
    """Validates an ``ExplainRequest`` against the model and decodes its images (each on its own).

    Request-level checks raise; per-image problems (decoding, per-image target or regions) become
    :class:`ImageFailure` entries so the request's other images are still served.
    """
    request_id = _short_text(msg.request_id, "request_id")
    if msg.describe:
        return ParsedRequest(request_id, True, (), (), OutputSpec(), ())
    limits = caps.limits
    if not msg.images:
        raise InvalidArgumentError("the request has no images", field="images")
    if len(msg.images) > limits.max_images:
        raise ResourceExhaustedError(
            f"the request has {len(msg.images)} images; the limit is {limits.max_images}", field="images"
        )
    methods = _methods(msg.methods, caps)
    layers = _layers(msg.layers, caps) if any(m in caps.layer_methods for m in methods) else ()
    output = _output(msg.output if msg.HasField("output") else None, caps)
    options = parse_options(msg.options if msg.HasField("options") else None, limits)
    default_target = _target(msg.target if msg.HasField("target") else None, caps, "target")
    default_regions = _regions(msg.regions, caps, "regions")
    images: list[ImageInput | ImageFailure] = []
    for i, image in enumerate(msg.images):
        image_id = image.id if len(image.id) <= MAX_ID_LENGTH else image.id[:MAX_ID_LENGTH]
        try:
            images.append(_image(i, image, caps, pre, default_target, default_regions))
        except Exception as exc:  # typed errors as they are; anything else is a logged, generic INTERNAL
            images.append(ImageFailure(i, image_id, to_camserve_error(exc)))
    max_targets = max((im.target.count for im in images if isinstance(im, ImageInput)), default=1)
    insight = parse_insight(msg, caps, layers, max_targets)
    return ParsedRequest(request_id, False, methods, layers, output, tuple(images), options, insight)


def _short_text(value: str, name: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgumentError(f"{name} is longer than {MAX_ID_LENGTH} characters", field=name)
    return value


def _unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _methods(requested: Sequence[str], caps: Capabilities) -> tuple[str, ...]:
    if not requested:
        return caps.default_methods
    for i, name in enumerate(requested):
        if name not in caps.methods:
            raise InvalidArgumentError(
                f"method {name!r} is not available for this {caps.kind}; available: {', '.join(caps.methods)}",
                field=f"methods[{i}]",
            )
    return _unique(requested)


def _layers(requested: Sequence[str], caps: Capabilities) -> tuple[str, ...]:
    if not requested:
        return caps.default_layers
    for i, name in enumerate(requested):
        if name not in caps.layer_grids:
            shown = ", ".join(caps.layers[-8:])
            raise NotFoundError(
                f"layer {name!r} is not an explainable layer of this model "
                f"({len(caps.layers)} candidates, describe the model to list them; the last ones: {shown})",
                field=f"layers[{i}]",
            )
    return _unique(requested)


def _output(msg: explain_pb2.OutputOptions | None, caps: Capabilities) -> OutputSpec:
    if msg is None:
        return OutputSpec(top_predictions=min(DEFAULT_TOP_PREDICTIONS, caps.num_classes))
    if msg.encoding not in _ENCODINGS:
        raise InvalidArgumentError(f"unknown map encoding {msg.encoding}", field="output.encoding")
    if msg.resolution not in _RESOLUTIONS:
        raise InvalidArgumentError(f"unknown resolution {msg.resolution}", field="output.resolution")
    if msg.include_reconstruction and caps.kind != "vae":
        raise InvalidArgumentError(
            "include_reconstruction applies to VAE models only", field="output.include_reconstruction"
        )
    top = msg.top_predictions or DEFAULT_TOP_PREDICTIONS
    return OutputSpec(
        encoding=_ENCODINGS[msg.encoding],
        resolution=_RESOLUTIONS[msg.resolution],
        include_reconstruction=msg.include_reconstruction,
        top_predictions=min(top, caps.num_classes),
    )


def _target(msg: explain_pb2.Target | None, caps: Capabilities, path: str) -> TargetSpec | None:
    """A validated target, or ``None`` when unset (the caller's default applies)."""
    if msg is None:
        return None
    set_fields = [name for name in ("top_k", "class_ids", "class_names") if getattr(msg, name)]
    if not set_fields:
        return None
    if caps.kind != "classifier":
        raise InvalidArgumentError("targets apply to classifiers; a VAE explains regions", field=path)
    if len(set_fields) > 1:
        raise InvalidArgumentError(f"set only one of top_k, class_ids, class_names (got {set_fields})", field=path)
    limit = caps.limits.max_top_k
    if msg.top_k:
        if msg.top_k > min(limit, caps.num_classes):
            raise InvalidArgumentError(
                f"top_k is {msg.top_k}; it must be at most {min(limit, caps.num_classes)}"
                f" (limit {limit}, {caps.num_classes} classes)",
                field=f"{path}.top_k",
            )
        return TargetSpec(top_k=int(msg.top_k))
    if msg.class_ids:
        ids = [int(c) for c in msg.class_ids]
        for j, class_id in enumerate(ids):
            if not 0 <= class_id < caps.num_classes:
                raise InvalidArgumentError(
                    f"class id {class_id} is outside [0, {caps.num_classes})", field=f"{path}.class_ids[{j}]"
                )
    else:
        if caps.labels is None:
            raise InvalidArgumentError("this model has no labels; use class ids", field=f"{path}.class_names")
        ids = []
        for j, name in enumerate(msg.class_names):
            if name not in caps.label_ids:
                raise NotFoundError(f"no class is labelled {name!r}", field=f"{path}.class_names[{j}]")
            ids.append(caps.label_ids[name])
    which = "class_ids" if msg.class_ids else "class_names"
    if len(ids) > limit:
        raise InvalidArgumentError(f"{len(ids)} classes requested; the limit is {limit}", field=f"{path}.{which}")
    if len(set(ids)) != len(ids):
        raise InvalidArgumentError("the same class is requested twice", field=f"{path}.{which}")
    return TargetSpec(top_k=None, class_ids=tuple(ids))


def _regions(msgs: Sequence[explain_pb2.Region], caps: Capabilities, path: str) -> tuple[RegionSpec, ...]:
    if not msgs:
        return ()
    if caps.kind != "vae":
        raise InvalidArgumentError("regions apply to VAE models; a classifier explains classes", field=path)
    if len(msgs) > caps.limits.max_regions:
        raise ResourceExhaustedError(
            f"{len(msgs)} regions requested; the limit is {caps.limits.max_regions}", field=path
        )
    height, width = caps.input_size
    out: list[RegionSpec] = []
    for i, region in enumerate(msgs):
        where = f"{path}[{i}]"
        kind = region.WhichOneof("shape")
        if kind == "box":
            b = region.box
            check_region((b.x0, b.y0, b.x1, b.y1), (height, width), f"{where}.box")  # the engine's rule and words
            out.append(RegionSpec(box=(b.x0, b.y0, b.x1, b.y1)))
        elif kind == "mask":
            m = region.mask
            if len(m.data) != m.height * m.width:  # the wire's own rule: the bytes must fill the declared shape
                raise InvalidArgumentError(
                    f"mask data has {len(m.data)} bytes; {m.height}x{m.width} needs {m.height * m.width}",
                    field=f"{where}.mask.data",
                )
            mask = torch.from_numpy(np.frombuffer(m.data, dtype=np.uint8).reshape(m.height, m.width) != 0)
            check_region(mask, (height, width), f"{where}.mask")
            out.append(RegionSpec(mask=mask))
        else:
            raise InvalidArgumentError("a region needs a box or a mask", field=where)
    return tuple(out)


def _image(
    index: int,
    msg: explain_pb2.Image,
    caps: Capabilities,
    pre: Preprocessor,
    default_target: TargetSpec | None,
    default_regions: tuple[RegionSpec, ...],
) -> ImageInput:
    path = f"images[{index}]"
    image_id = _short_text(msg.id, f"{path}.id")
    target = _target(msg.target if msg.HasField("target") else None, caps, f"{path}.target") or default_target
    regions = _regions(msg.regions, caps, f"{path}.regions") or default_regions
    if caps.kind == "vae" and not regions:
        height, width = caps.input_size
        regions = (RegionSpec(box=(0, 0, width, height)),)  # the whole reconstruction
    limits = caps.limits
    kind = msg.WhichOneof("data")
    if kind == "encoded":
        img = decode_image(
            msg.encoded, max_bytes=limits.max_image_bytes, max_pixels=limits.max_pixels, field=f"{path}.encoded"
        )
        pixels, geometry = pre.from_pil(img)
    elif kind == "pixels":
        t = msg.pixels
        if t.encoding not in _PIXEL_DTYPES:
            raise InvalidArgumentError(
                "raw pixels must be FLOAT32, FLOAT16 or UINT8 (send files as `encoded`)",
                field=f"{path}.pixels.encoding",
            )
        raw = pixels_to_tensor(
            t.data, list(t.shape), _PIXEL_DTYPES[t.encoding], max_pixels=limits.max_pixels, field=f"{path}.pixels"
        )
        pixels, geometry = pre.from_tensor(raw)
    else:
        raise InvalidArgumentError("the image has neither encoded bytes nor pixels", field=path)
    return ImageInput(index, image_id, pixels, geometry, target or TargetSpec(), regions)
