"""The edge between bytes and the engine: ``ExplainRequest`` bytes in, validated domain objects out, and back.

Protobuf lives here and nowhere else on the server (the handler and the engine see dataclasses and tensors):

- :func:`parse_request` turns request bytes (or a REST raw image, via :func:`request_from_rest`) into a
  :class:`ParsedRequest`: methods and layers resolved against the model's :class:`Capabilities`, targets and regions
  checked and normalised, output options and limits enforced, and every image decoded on its own. Request-level
  problems raise a :class:`CamserveError` with the field path at fault (``"layers[1]"``, ``"target.class_names[0]"``);
  a bad image becomes an :class:`ImageFailure` for that image only (``"images[2].encoded"``).
- :func:`response_size_bound` gives an upper bound of the encoded response from shapes alone, so an oversized
  request is refused before the engine runs.
- :func:`encode_response` / :func:`encode_json` write the results; :func:`error_message` is the one place that maps
  an exception to an in-band ``Error`` (unknown exceptions become a generic ``INTERNAL``; details go to the log).

The REST JSON answer (a raw image POSTed with curl) is documented in :func:`encode_json`.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
import torch
from camserve_proto.camserve.v1 import explain_pb2
from google.protobuf.message import DecodeError

from handlers.engine.errors import (
    CamserveError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from handlers.serving._config import Limits
from handlers.serving._images import Geometry, PixelDType, Preprocessor, decode_image, pixels_to_tensor
from handlers.serving._maps import Encoded, EncodingName, encode_array, encoded_size_bound, resize_map

__all__ = [
    "Capabilities",
    "ImageFailure",
    "ImageInput",
    "ImageOutcome",
    "MapResult",
    "OutputSpec",
    "ParsedRequest",
    "PredictionResult",
    "RegionSpec",
    "TargetSpec",
    "Timing",
    "check_response_size",
    "decode_request",
    "encode_json",
    "encode_response",
    "error_json",
    "error_message",
    "error_response",
    "http_status",
    "model_info",
    "model_info_json",
    "parse_request",
    "request_from_rest",
    "response_size_bound",
    "to_camserve_error",
]

_log = logging.getLogger(__name__)

Kind = Literal["classifier", "vae"]
Resolution = Literal["NATIVE", "INPUT"]

DEFAULT_TOP_PREDICTIONS: Final = 5
MAX_ID_LENGTH: Final = 256
#: Maps with at most this many values also appear as nested lists in the REST JSON answer (e.g. a 7x7 Grad-CAM).
JSON_VALUES_LIMIT: Final = 1024
#: Options a REST raw-image call may carry as multipart form fields (TorchServe 0.12 drops query strings).
REST_PARAMETERS: Final = ("methods", "layers", "top_k", "regions")

_ENCODINGS: Final[dict[int, EncodingName]] = {
    explain_pb2.ENCODING_UNSPECIFIED: "FLOAT16",
    explain_pb2.FLOAT16: "FLOAT16",
    explain_pb2.FLOAT32: "FLOAT32",
    explain_pb2.UINT8: "UINT8",
    explain_pb2.PNG: "PNG",
}
_ENCODING_ENUM: Final[dict[str, explain_pb2.Encoding]] = {
    "FLOAT16": explain_pb2.FLOAT16,
    "FLOAT32": explain_pb2.FLOAT32,
    "UINT8": explain_pb2.UINT8,
    "PNG": explain_pb2.PNG,
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
_HTTP_STATUS: Final[dict[str, int]] = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
}
# Generous per-item protobuf overheads (tags, length prefixes, numbers) for the response bound.
_RESPONSE_FIXED: Final = 1024
_PER_IMAGE: Final = 256
_PER_MAP: Final = 64
_PER_PREDICTION: Final = 32


# --------------------------------------------------------------------------------------------------- domain types
@dataclass(frozen=True)
class MethodShape:
    """The native size of one method's maps.

    Attributes:
        grid: True for maps on the layer's grid (``[h, w]`` of the layer); False for a fixed shape.
        fixed: The fixed shape (e.g. ``[3, H, W]`` for input gradients) when ``grid`` is False.
        count: Maps per layer when they do not follow the image's targets or regions (VAE ``latent_gradcam``: one
            per latent channel plus their mean); 0 = one map per target or region.
    """

    grid: bool
    fixed: tuple[int, ...] = ()
    count: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What the loaded model offers; the codec validates requests against it and sizes responses with it.

    Attributes:
        kind: ``"classifier"`` or ``"vae"``.
        methods: Applicable method names.
        default_methods: Used when a request names none.
        layers: Candidate layers (dotted names) in forward order.
        default_layers: Used when a request names none.
        layer_methods: Methods that give one map per layer (the others give one map at the input, layer ``""``).
        layer_grids: ``(h, w)`` of every candidate layer at the input size.
        method_shapes: Native map size rule per method.
        labels: Class names by id (classifiers), or ``None``.
        num_classes: Number of model outputs (classifiers; 0 for a VAE).
        input_size: Model input ``(H, W)``; also the VAE's reconstruction size.
        limits: Per-request limits.
    """

    kind: Kind
    methods: tuple[str, ...]
    default_methods: tuple[str, ...]
    layers: tuple[str, ...]
    default_layers: tuple[str, ...]
    layer_methods: frozenset[str]
    layer_grids: Mapping[str, tuple[int, int]]
    method_shapes: Mapping[str, MethodShape]
    labels: tuple[str, ...] | None
    num_classes: int
    input_size: tuple[int, int]
    limits: Limits
    label_ids: Mapping[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids: dict[str, int] = {}
        for i, name in enumerate(self.labels or ()):
            ids.setdefault(name, i)  # duplicated labels resolve to the first id
        object.__setattr__(self, "label_ids", ids)

    def map_shape(self, method: str, layer: str) -> tuple[int, ...]:
        """Native shape of ``method``'s map on ``layer`` (``""`` for input methods)."""
        rule = self.method_shapes[method]
        return self.layer_grids[layer] if rule.grid else rule.fixed


@dataclass(frozen=True)
class OutputSpec:
    """Output options: map encoding, resolution, VAE reconstruction, predictions per image."""

    encoding: EncodingName = "FLOAT16"
    resolution: Resolution = "NATIVE"
    include_reconstruction: bool = False
    top_predictions: int = DEFAULT_TOP_PREDICTIONS


@dataclass(frozen=True)
class TargetSpec:
    """Classifier targets of one image: the top ``top_k`` classes, or explicit ``class_ids`` (exactly one set)."""

    top_k: int | None = 1
    class_ids: tuple[int, ...] | None = None

    @property
    def count(self) -> int:
        """Number of targets (maps per method and layer)."""
        return len(self.class_ids) if self.class_ids is not None else int(self.top_k or 1)


@dataclass(frozen=True, eq=False)
class RegionSpec:
    """A VAE region in reconstruction pixels: a half-open ``box`` or a boolean ``mask`` ``[H, W]``."""

    box: tuple[int, int, int, int] | None = None
    mask: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class ImageInput:
    """One decoded, validated image ready for the engine."""

    index: int
    id: str
    pixels: torch.Tensor
    geometry: Geometry
    target: TargetSpec
    regions: tuple[RegionSpec, ...] = ()


@dataclass(frozen=True)
class ImageFailure:
    """An image that failed decoding or validation; the other images of its request are unaffected."""

    index: int
    id: str
    error: CamserveError


@dataclass(frozen=True, eq=False)
class ParsedRequest:
    """A validated request. ``describe`` requests carry no images."""

    request_id: str
    describe: bool
    methods: tuple[str, ...]
    layers: tuple[str, ...]
    output: OutputSpec
    images: tuple[ImageInput | ImageFailure, ...]

    @property
    def valid_images(self) -> tuple[ImageInput, ...]:
        """The images that decoded and validated."""
        return tuple(im for im in self.images if isinstance(im, ImageInput))


@dataclass(frozen=True)
class PredictionResult:
    """One prediction as returned to the caller."""

    class_id: int
    score: float
    logit: float
    label: str = ""


@dataclass(frozen=True, eq=False)
class MapResult:
    """One map at native resolution: method, layer (``""`` at the input), target class or region index."""

    method: str
    layer: str
    target: int
    values: torch.Tensor


@dataclass(frozen=True, eq=False)
class ImageOutcome:
    """What the engine produced for one image.

    Attributes:
        predictions: Best first (classifiers).
        maps: Native-resolution maps, in any order.
        targets: The explained class ids (or region indices) in the order the maps are reported.
        reconstruction: The VAE reconstruction ``[3, H, W]``, when computed.
    """

    predictions: tuple[PredictionResult, ...] = ()
    maps: tuple[MapResult, ...] = ()
    targets: tuple[int, ...] = ()
    reconstruction: torch.Tensor | None = None


@dataclass(frozen=True)
class Timing:
    """Server-side timing of one request, in milliseconds, and the TorchServe batch size it was part of."""

    decode_ms: float = 0.0
    explain_ms: float = 0.0
    encode_ms: float = 0.0
    batch_size: int = 0


# --------------------------------------------------------------------------------------------------- errors
def to_camserve_error(exc: BaseException) -> CamserveError:
    """The typed error to report for ``exc``: itself if typed, else a generic ``INTERNAL`` (details are logged)."""
    if isinstance(exc, CamserveError):
        return exc
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return ResourceExhaustedError("the server ran out of memory for this request")
    _log.error("internal error while serving a request", exc_info=(type(exc), exc, exc.__traceback__))
    return InternalError("internal server error; the details are in the server log")


def error_message(exc: BaseException, *, field_prefix: str = "") -> explain_pb2.Error:
    """The in-band ``Error`` for any exception; the one place that maps errors to codes and messages."""
    err = to_camserve_error(exc)
    path = err.field
    if field_prefix and path:
        path = f"{field_prefix}.{path}"
    return explain_pb2.Error(code=err.code, message=err.message, field=path)


def http_status(code: str) -> int:
    """HTTP status for a gRPC code name (REST JSON answers only; gRPC answers are always OK with in-band errors)."""
    return _HTTP_STATUS.get(code, 500)


# --------------------------------------------------------------------------------------------------- parsing
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
    default_target = _target(msg.target if msg.HasField("target") else None, caps, "target")
    default_regions = _regions(msg.regions, caps, "regions")
    images: list[ImageInput | ImageFailure] = []
    for i, image in enumerate(msg.images):
        image_id = image.id if len(image.id) <= MAX_ID_LENGTH else image.id[:MAX_ID_LENGTH]
        try:
            images.append(_image(i, image, caps, pre, default_target, default_regions))
        except Exception as exc:  # typed errors as they are; anything else is a logged, generic INTERNAL
            images.append(ImageFailure(i, image_id, to_camserve_error(exc)))
    return ParsedRequest(request_id, False, methods, layers, output, tuple(images))


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
            if not (0 <= b.x0 < b.x1 <= width and 0 <= b.y0 < b.y1 <= height):
                raise InvalidArgumentError(
                    f"box ({b.x0}, {b.y0}, {b.x1}, {b.y1}) must satisfy 0 <= x0 < x1 <= {width} and "
                    f"0 <= y0 < y1 <= {height} (half-open, reconstruction pixels)",
                    field=f"{where}.box",
                )
            out.append(RegionSpec(box=(b.x0, b.y0, b.x1, b.y1)))
        elif kind == "mask":
            m = region.mask
            if (m.height, m.width) != (height, width):
                raise InvalidArgumentError(
                    f"mask is {m.height}x{m.width} (HxW); the reconstruction is {height}x{width}", field=f"{where}.mask"
                )
            if len(m.data) != height * width:
                raise InvalidArgumentError(
                    f"mask data has {len(m.data)} bytes; {height}x{width} needs {height * width}",
                    field=f"{where}.mask.data",
                )
            mask = torch.from_numpy(np.frombuffer(m.data, dtype=np.uint8).reshape(height, width) != 0)
            if not bool(mask.any()):
                raise InvalidArgumentError("mask selects no pixel", field=f"{where}.mask")
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


def request_from_rest(body: bytes, params: Mapping[str, str]) -> explain_pb2.ExplainRequest:
    """Builds the ``ExplainRequest`` for a REST raw-image call: the image and, optionally, a few options.

    A plain body (``curl -T cat.jpg URL``) uses the model's defaults. Options need a multipart form, whose other
    fields TorchServe passes on as item keys (it drops query strings): ``curl -F data=@cat.jpg -F
    methods=gradcam,saliency -F top_k=3 URL``. Accepted fields (comma-separated lists): ``methods``, ``layers``,
    ``top_k``, and ``regions=x0,y0,x1,y1;x0,y0,x1,y1`` (VAE boxes).

    Raises:
        InvalidArgumentError: Unknown parameters or malformed values.
    """
    unknown = sorted(set(params) - set(REST_PARAMETERS))
    if unknown:
        raise InvalidArgumentError(
            f"unknown form field(s) {unknown}; a raw-image call accepts {', '.join(REST_PARAMETERS)}. To send an "
            "image, make it the whole request body with a binary content type (curl -T image.png URL, or "
            "curl -H 'Content-Type: application/octet-stream' --data-binary @image.png URL), or a form field "
            "named data (curl -F data=@image.png URL)",
            field=unknown[0],
        )
    msg = explain_pb2.ExplainRequest()
    msg.images.add(encoded=bytes(body))
    msg.methods.extend(_split(params.get("methods", "")))
    msg.layers.extend(_split(params.get("layers", "")))
    if "top_k" in params:
        try:
            top_k = int(params["top_k"])
        except ValueError as exc:
            raise InvalidArgumentError(f"top_k must be an integer, got {params['top_k']!r}", field="top_k") from exc
        if top_k < 1:
            raise InvalidArgumentError(f"top_k must be at least 1, got {top_k}", field="top_k")
        msg.target.top_k = top_k
    for i, text in enumerate(p for p in params.get("regions", "").split(";") if p.strip()):
        try:
            x0, y0, x1, y1 = (int(v) for v in text.split(","))
        except ValueError as exc:
            raise InvalidArgumentError(
                f"a region is x0,y0,x1,y1 (integers), got {text!r}", field=f"regions[{i}]"
            ) from exc
        msg.regions.add(box=explain_pb2.Box(x0=x0, y0=y0, x1=x1, y1=y1))
    return msg


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# --------------------------------------------------------------------------------------------------- sizing
def _planned_maps(parsed: ParsedRequest, image: ImageInput, caps: Capabilities) -> list[tuple[int, ...]]:
    """Shapes of the maps the engine will return for ``image``, at the requested resolution."""
    count = len(image.regions) if caps.kind == "vae" else image.target.count
    height, width = caps.input_size
    shapes: list[tuple[int, ...]] = []
    for method in parsed.methods:
        for layer in parsed.layers if method in caps.layer_methods else ("",):
            shape = caps.map_shape(method, layer)
            if parsed.output.resolution == "INPUT":
                shape = (*shape[:-2], height, width)
            shapes.extend([shape] * (caps.method_shapes[method].count or count))
    return shapes


def response_size_bound(parsed: ParsedRequest, caps: Capabilities, *, as_json: bool = False) -> int:
    """An upper bound of the encoded response's size, computed from shapes before the engine runs.

    Args:
        parsed: The validated request.
        caps: The model's capabilities (map shapes per method and layer).
        as_json: Bound the REST JSON answer (maps as base64 PNG plus small value lists) instead of protobuf.
    """
    label_bytes = max((len(label.encode()) for label in caps.labels or ()), default=0)
    total = _RESPONSE_FIXED + len(parsed.request_id)
    for image in parsed.images:
        total += _PER_IMAGE + len(image.id)
        if isinstance(image, ImageFailure):
            total += len(image.error.message.encode()) + len(image.error.field)
            continue
        total += parsed.output.top_predictions * (_PER_PREDICTION + label_bytes) * (4 if as_json else 1)
        for shape in _planned_maps(parsed, image, caps):
            if as_json:
                png = encoded_size_bound(shape, "PNG")
                values = math.prod(shape)
                total += 4 * math.ceil(png / 3) + _PER_MAP * 2
                if values <= JSON_VALUES_LIMIT:
                    total += values * 16
            else:
                total += _PER_MAP + encoded_size_bound(shape, parsed.output.encoding)
        for method in parsed.methods:
            total += (len(method) + max((len(layer) for layer in parsed.layers), default=0)) * (len(parsed.layers) + 1)
        if parsed.output.include_reconstruction:
            shape = (3, *caps.input_size)
            encoding: EncodingName = "PNG" if as_json else parsed.output.encoding
            bound = encoded_size_bound(shape, encoding)
            total += _PER_MAP + (4 * math.ceil(bound / 3) if as_json else bound)
    return total


def check_response_size(parsed: ParsedRequest, caps: Capabilities, *, as_json: bool = False) -> None:
    """Refuses a request whose response could exceed ``limits.max_response_bytes``.

    Raises:
        ResourceExhaustedError: With the bound and the limit, and what to reduce.
    """
    bound = response_size_bound(parsed, caps, as_json=as_json)
    limit = caps.limits.max_response_bytes
    if bound > limit:
        raise ResourceExhaustedError(
            f"the response could reach {bound} bytes, over the server's limit of {limit}; request fewer images, "
            "methods, layers or targets, NATIVE resolution, or a smaller encoding (UINT8/PNG)",
            field="output",
        )


# --------------------------------------------------------------------------------------------------- encoding
def _ordered_maps(parsed: ParsedRequest, outcome: ImageOutcome) -> list[MapResult]:
    """Maps in request order: methods, then layers, then targets (top-k rank, requested class or region order)."""
    method_rank = {m: i for i, m in enumerate(parsed.methods)}
    layer_rank = {layer: i for i, layer in enumerate(parsed.layers)}
    target_rank = {t: i for i, t in enumerate(outcome.targets)}
    last = len(method_rank) + len(layer_rank) + len(target_rank)
    return sorted(
        outcome.maps,
        key=lambda m: (method_rank.get(m.method, last), layer_rank.get(m.layer, -1), target_rank.get(m.target, last)),
    )


def _encode_map(values: torch.Tensor, parsed: ParsedRequest, caps: Capabilities, encoding: EncodingName) -> Encoded:
    if parsed.output.resolution == "INPUT":
        values = resize_map(values.to(torch.float32), caps.input_size)
    return encode_array(values, encoding)


def _tensor_message(encoded: Encoded) -> explain_pb2.Tensor:
    return explain_pb2.Tensor(
        shape=list(encoded.shape),
        encoding=_ENCODING_ENUM[encoded.encoding],
        data=encoded.data,
        value_min=encoded.value_min,
        value_max=encoded.value_max,
        scale=encoded.scale if encoded.scale != 1.0 else 0.0,
    )


def _geometry_message(g: Geometry) -> explain_pb2.Geometry:
    x0, y0, x1, y1 = g.crop
    return explain_pb2.Geometry(
        original_width=g.original_width,
        original_height=g.original_height,
        crop=explain_pb2.Box(x0=x0, y0=y0, x1=x1, y1=y1),
        input_width=g.input_width,
        input_height=g.input_height,
    )


def _timing_message(t: Timing) -> explain_pb2.Timing:
    return explain_pb2.Timing(
        decode_ms=t.decode_ms, explain_ms=t.explain_ms, encode_ms=t.encode_ms, batch_size=t.batch_size
    )


def encode_response(
    parsed: ParsedRequest,
    outcomes: Mapping[int, ImageOutcome | BaseException],
    caps: Capabilities,
    *,
    model_name: str,
    model_version: str,
    versions: Mapping[str, str],
    timing: Timing,
) -> explain_pb2.ExplainResponse:
    """Builds the ``ExplainResponse`` of a served request.

    Args:
        parsed: The validated request.
        outcomes: By image index: the engine's outcome, or the error that stopped that image's group.
        caps: Model capabilities (input size for INPUT resolution).
        model_name: Echoed model name.
        model_version: Echoed model version.
        versions: Server software versions.
        timing: This request's timing.
    """
    response = explain_pb2.ExplainResponse(
        model_name=model_name,
        model_version=model_version,
        request_id=parsed.request_id,
        timing=_timing_message(timing),
    )
    response.versions.update(versions)
    for image in parsed.images:
        result = response.results.add(id=image.id)
        if isinstance(image, ImageFailure):
            result.error.CopyFrom(error_message(image.error))
            continue
        result.geometry.CopyFrom(_geometry_message(image.geometry))
        outcome = outcomes.get(image.index)
        if outcome is None:
            outcome = InternalError("no result was produced for this image")
        if isinstance(outcome, BaseException):
            result.error.CopyFrom(error_message(outcome))
            continue
        for p in outcome.predictions:
            result.predictions.add(class_id=p.class_id, label=p.label, score=p.score, logit=p.logit)
        for m in _ordered_maps(parsed, outcome):
            encoded = _encode_map(m.values, parsed, caps, parsed.output.encoding)
            result.maps.add(method=m.method, layer=m.layer, target=m.target, data=_tensor_message(encoded))
        if parsed.output.include_reconstruction and outcome.reconstruction is not None:
            result.reconstruction.CopyFrom(
                _tensor_message(encode_array(outcome.reconstruction, parsed.output.encoding))
            )
    return response


def error_response(
    exc: BaseException, *, request_id: str = "", model_name: str = "", model_version: str = ""
) -> explain_pb2.ExplainResponse:
    """A response that rejects the whole request in band."""
    response = explain_pb2.ExplainResponse(model_name=model_name, model_version=model_version, request_id=request_id)
    response.error.CopyFrom(error_message(exc))
    return response


def model_info(caps: Capabilities) -> explain_pb2.ModelInfo:
    """The ``ModelInfo`` answered to describe requests."""
    height, width = caps.input_size
    return explain_pb2.ModelInfo(
        kind=caps.kind,
        methods=list(caps.methods),
        default_methods=list(caps.default_methods),
        layers=list(caps.layers),
        default_layers=list(caps.default_layers),
        labels=list(caps.labels or ()),
        input_width=width,
        input_height=height,
        max_images=caps.limits.max_images,
        max_top_k=caps.limits.max_top_k,
        max_regions=caps.limits.max_regions,
        max_image_bytes=caps.limits.max_image_bytes,
        max_pixels=caps.limits.max_pixels,
        max_response_bytes=caps.limits.max_response_bytes,
    )


def model_info_json(caps: Capabilities, *, model_name: str) -> bytes:
    """``ModelInfo`` as JSON (TorchServe's management describe API and REST describe calls)."""
    from google.protobuf.json_format import MessageToDict

    body = {"model": model_name, **MessageToDict(model_info(caps), preserving_proto_field_name=True)}
    return json.dumps(body, indent=1).encode()


# --------------------------------------------------------------------------------------------------- REST JSON
def _json_number(value: float) -> float:
    return float(f"{value:.4g}")


def _json_values(array: np.ndarray) -> Any:
    return np.vectorize(_json_number, otypes=[float])(array).tolist()


def _json_map(method: str, layer: str, target: int, values: torch.Tensor) -> dict[str, Any]:
    as_png = encode_array(values, "PNG")
    entry: dict[str, Any] = {
        "method": method,
        "layer": layer,
        "target": target,
        "shape": list(as_png.shape),
        "min": _json_number(as_png.value_min),
        "max": _json_number(as_png.value_max),
    }
    if math.prod(as_png.shape) <= JSON_VALUES_LIMIT:
        entry["values"] = _json_values(values.detach().to("cpu", torch.float32).numpy())
    entry["png"] = base64.b64encode(as_png.data).decode()
    return entry


def encode_json(
    parsed: ParsedRequest,
    outcomes: Mapping[int, ImageOutcome | BaseException],
    caps: Capabilities,
    *,
    model_name: str,
    model_version: str,
    timing: Timing,
    encode_start: float | None = None,
) -> tuple[int, bytes]:
    """The REST answer to a raw image: ``(http_status, JSON bytes)``, meant to be read by a person with curl.

    ``encode_start`` (a ``time.perf_counter()`` value) makes ``timing.encode_ms`` cover the map encoding here.

    Layout (one image)::

        {"model": "shapes-classifier", "version": "1.0",
         "predictions": [{"class_id": 2, "label": "circle", "score": 0.97, "logit": 6.1}, ...],
         "maps": [{"method": "gradcam", "layer": "layer4", "target": 2, "shape": [8, 8],
                   "min": 0.0, "max": 1.7, "values": [[...], ...], "png": "iVBORw0..."}, ...],
         "geometry": {"original_size": [W, H], "crop": [x0, y0, x1, y1], "input_size": [W, H]},
         "timing": {"decode_ms": ..., "explain_ms": ..., "encode_ms": ..., "batch_size": 1}}

    Maps are at native resolution. Each has ``png`` (base64 PNG, linearly quantised from ``min`` to ``max``; grey
    for 2-D maps, RGB for 3-channel input gradients) and, when it has at most 1024 values (CAM grids such as 7x7 or
    8x8), ``values`` as nested lists with 4 significant digits. VAE answers add ``"region"`` indices as ``target``.
    Errors: ``{"error": {"code": ..., "message": ..., "field": ...}}`` with HTTP status 400 / 404 / 413 / 500 / 503.
    """
    [image] = parsed.images
    if isinstance(image, ImageFailure):
        return error_json(image.error, rest_body=True)
    outcome = outcomes.get(image.index) or InternalError("no result was produced for this image")
    if isinstance(outcome, BaseException):
        return error_json(outcome)
    g = image.geometry
    maps = [_json_map(m.method, m.layer, m.target, m.values) for m in _ordered_maps(parsed, outcome)]
    encode_ms = timing.encode_ms if encode_start is None else (time.perf_counter() - encode_start) * 1000.0
    body: dict[str, Any] = {
        "model": model_name,
        "version": model_version,
        "predictions": [
            {"class_id": p.class_id, "label": p.label, "score": _json_number(p.score), "logit": _json_number(p.logit)}
            for p in outcome.predictions
        ],
        "maps": maps,
        "geometry": {
            "original_size": [g.original_width, g.original_height],
            "crop": list(g.crop),
            "input_size": [g.input_width, g.input_height],
        },
        "timing": {
            "decode_ms": round(timing.decode_ms, 2),
            "explain_ms": round(timing.explain_ms, 2),
            "encode_ms": round(encode_ms, 2),
            "batch_size": timing.batch_size,
        },
    }
    if outcome.reconstruction is not None and parsed.output.include_reconstruction:
        body["reconstruction_png"] = base64.b64encode(encode_array(outcome.reconstruction, "PNG").data).decode()
    return 200, json.dumps(body, indent=1).encode()


def error_json(exc: BaseException, *, rest_body: bool = False) -> tuple[int, bytes]:
    """``(http_status, JSON)`` for an error on the REST JSON path; image field paths are reported as ``body``."""
    err = error_message(exc)
    path = err.field
    if rest_body and path.startswith("images[0]"):
        path = "body"  # the REST caller sent the image as the request body
    body = {"error": {"code": err.code, "message": err.message, "field": path}}
    return http_status(err.code), json.dumps(body, indent=1).encode()
