"""The response bound: an upper bound of an answer's encoded size from shapes alone, checked before the engine runs.

Over ``limits.max_response_bytes`` a request is refused with ``RESOURCE_EXHAUSTED`` instead of being computed and then
dropped (TorchServe kills a worker whose answer exceeds its own ``max_response_size``). Float encodings are bounded
exactly, PNG by zlib's worst case, protobuf framing by generous per-item overheads.
"""

from __future__ import annotations

import math
from typing import Final

from handlers.engine.errors import ResourceExhaustedError
from handlers.serving._maps import EncodingName, encoded_size_bound
from handlers.serving._rest import JSON_VALUES_LIMIT
from handlers.serving._types import Capabilities, ImageFailure, ImageInput, ParsedRequest

__all__ = ["check_response_size", "response_size_bound"]

# Generous per-item protobuf overheads (tags, length prefixes, numbers) for the response bound.
_RESPONSE_FIXED: Final = 1024
_PER_IMAGE: Final = 256
_PER_MAP: Final = 64
_PER_PREDICTION: Final = 32


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


def _planned_insight(parsed: ParsedRequest, image: ImageInput, caps: Capabilities, maps: int) -> list[tuple[int, ...]]:
    """Shapes of the feature maps and the consistency check's mapped-back maps for ``image`` (``()`` = numbers only).

    Feature maps are bounded by ``top_n`` per layer (a layer may have fewer channels); one agreement per map and
    transform.
    """
    shapes: list[tuple[int, ...]] = []
    features = parsed.insight.feature_maps
    if features is not None:
        per_layer = features.top_n * (image.target.count if features.rank == "gradcam" else 1)
        for layer in features.layers or ():
            grid = caps.input_size if parsed.output.resolution == "INPUT" else caps.layer_grids[layer]
            shapes.extend([tuple(grid)] * per_layer)
    consistency = parsed.insight.consistency
    if consistency is not None:
        mapped: tuple[int, ...] = tuple(caps.input_size) if parsed.insight.consistency_maps else ()
        shapes.extend([mapped] * (maps * len(consistency.transforms)))
    return shapes


def _insight_names(parsed: ParsedRequest, image: ImageInput, maps: int) -> int:
    """Bytes of the layer and method names the feature maps and agreements of ``image`` repeat."""
    total = 0
    features = parsed.insight.feature_maps
    if features is not None:
        per_layer = features.top_n * (image.target.count if features.rank == "gradcam" else 1)
        total += sum(len(layer.encode()) for layer in features.layers or ()) * per_layer
    if parsed.insight.consistency is not None:
        longest = max((len(m.encode()) for m in parsed.methods), default=0)
        longest += max((len(layer.encode()) for layer in parsed.layers), default=0)
        total += longest * maps * len(parsed.insight.consistency.transforms)
    return total


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
        planned = _planned_maps(parsed, image, caps)
        for shape in planned + _planned_insight(parsed, image, caps, len(planned)):
            if not shape:  # a consistency agreement without its map: numbers and the map's address
                total += _PER_MAP * (4 if as_json else 1)
            elif as_json:
                png = encoded_size_bound(shape, "PNG")
                values = math.prod(shape)
                total += 4 * math.ceil(png / 3) + _PER_MAP * 2
                if values <= JSON_VALUES_LIMIT:
                    total += values * 16
            else:
                total += _PER_MAP + encoded_size_bound(shape, parsed.output.encoding)
        total += _insight_names(parsed, image, len(planned))
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
