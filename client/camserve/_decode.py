"""Decoding of ``camserve.v1`` responses into the SDK's values: protobuf stays here, at the edge.

What the server sent is checked as it is read; anything that does not match the contract (sizes, encodings,
duplicate maps, result counts) is the server's fault and raises :class:`~camserve.errors.Internal`.
"""

from __future__ import annotations

import io
import types
from typing import Any, TypeVar

import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from PIL import Image as PILImage

from camserve._insight import Agreement, FeatureMap, transform_name
from camserve._maps import Map, MapKey, frozen
from camserve._results import Box, ExplainResult, Geometry, MethodCost, ModelInfo, Prediction, Timing
from camserve.errors import Internal, from_code

_FLOAT_DTYPES: dict[int, np.dtype[Any]] = {explain_pb2.FLOAT32: np.dtype("<f4"), explain_pb2.FLOAT16: np.dtype("<f2")}


def decode_tensor(tensor: explain_pb2.Tensor, what: str, default: int = explain_pb2.FLOAT16) -> np.ndarray:
    """Decodes a contract ``Tensor`` into a float32 array of its declared shape.

    Raises:
        Internal: The data does not match the declared shape or encoding (a server bug, not the caller's).
    """
    shape = tuple(int(s) for s in tensor.shape)
    count = int(np.prod(shape)) if shape else 0
    encoding = tensor.encoding or default
    if not shape or count == 0:
        raise Internal(f"malformed response: {what} has empty shape {list(shape)}")
    if encoding in _FLOAT_DTYPES:
        dtype = _FLOAT_DTYPES[encoding]
        if len(tensor.data) != count * dtype.itemsize:
            raise Internal(
                f"malformed response: {what} has {len(tensor.data)} bytes for shape {list(shape)} "
                f"({dtype.itemsize} bytes per value)"
            )
        values = np.frombuffer(tensor.data, dtype=dtype).astype(np.float32).reshape(shape)
        if encoding == explain_pb2.FLOAT16 and tensor.scale not in (0.0, 1.0):
            values = values * np.float32(tensor.scale)  # maps outside float16's normal range travel scaled
        return values
    if encoding == explain_pb2.UINT8:
        if len(tensor.data) != count:
            raise Internal(f"malformed response: {what} has {len(tensor.data)} bytes for shape {list(shape)}")
        q = np.frombuffer(tensor.data, dtype=np.uint8).reshape(shape)
    elif encoding == explain_pb2.PNG:
        try:
            with PILImage.open(io.BytesIO(tensor.data)) as png:
                if png.format != "PNG":
                    raise OSError(f"{png.format} data")
                q = np.asarray(png.convert("RGB" if len(shape) == 3 else "L"))
        except (OSError, ValueError) as exc:
            raise Internal(f"malformed response: {what} is not a readable PNG ({exc})") from None
        if q.ndim == 3:
            q = q.transpose(2, 0, 1)
        if q.shape != shape:
            raise Internal(f"malformed response: {what} PNG is {list(q.shape)}, declared {list(shape)}")
    else:
        raise Internal(f"malformed response: {what} has unknown encoding {encoding}")
    lo, hi = float(tensor.value_min), float(tensor.value_max)
    return (lo + q.astype(np.float32) * ((hi - lo) / 255.0)).astype(np.float32)


R = TypeVar("R", explain_pb2.FiltersResponse, explain_pb2.VisualizeResponse)


def parse_reply(payload: bytes, message: type[R]) -> R:
    """A ``FiltersResponse`` / ``VisualizeResponse`` from a prediction payload.

    Raises:
        CamserveError: The server rejected the request in band (the matching subclass), or the payload is unreadable
            (Internal).
    """
    reply = message()
    try:
        reply.ParseFromString(payload)
    except Exception as exc:  # protobuf raises DecodeError (or others across versions); all mean unreadable
        raise Internal(f"malformed response: not a {message.DESCRIPTOR.name} ({type(exc).__name__})") from None
    if reply.HasField("error") and reply.error.code:
        raise from_code(reply.error.code, reply.error.message, reply.error.field)
    return reply


def decode_model_info(response: explain_pb2.ExplainResponse, name: str) -> ModelInfo:
    """Builds :class:`ModelInfo` from a describe response."""
    info = response.model_info
    return ModelInfo(
        name=response.model_name or name,
        version=response.model_version,
        kind=info.kind,
        methods=tuple(info.methods),
        default_methods=tuple(info.default_methods),
        layers=tuple(info.layers),
        default_layers=tuple(info.default_layers),
        labels=tuple(info.labels),
        input_size=(int(info.input_height), int(info.input_width)),
        max_images=int(info.max_images),
        max_top_k=int(info.max_top_k),
        max_regions=int(info.max_regions),
        max_image_bytes=int(info.max_image_bytes),
        max_pixels=int(info.max_pixels),
        max_response_bytes=int(info.max_response_bytes),
        versions=types.MappingProxyType(dict(response.versions)),
        method_costs=types.MappingProxyType(
            {
                m.name: MethodCost(
                    forwards=int(m.forwards),
                    backwards=int(m.backwards),
                    per=tuple(m.per),
                    fixed_forwards=int(m.fixed_forwards),
                    bounds=types.MappingProxyType({k: int(v) for k, v in m.bounds.items()}),
                )
                for m in info.method_info
            }
        ),
    )


def _geometry(result: explain_pb2.ImageResult) -> Geometry | None:
    if not result.HasField("geometry"):
        return None
    g = result.geometry
    return Geometry(
        original_size=(int(g.original_height), int(g.original_width)),
        crop=Box(g.crop.x0, g.crop.y0, g.crop.x1, g.crop.y1),
        input_size=(int(g.input_height), int(g.input_width)),
    )


def decode_image_result(
    result: explain_pb2.ImageResult,
    index: int,
    response: explain_pb2.ExplainResponse,
    round_trip_ms: float,
) -> ExplainResult:
    """Builds one :class:`ExplainResult` (with its in-band error, if any) from an ``ImageResult``."""
    t = response.timing
    timing = Timing(
        decode_ms=float(t.decode_ms),
        explain_ms=float(t.explain_ms),
        encode_ms=float(t.encode_ms),
        batch_size=int(t.batch_size),
        round_trip_ms=round_trip_ms,
    )
    common = {
        "index": index,
        "id": result.id or str(index),
        "timing": timing,
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if result.HasField("error") and result.error.code:
        e = result.error
        return ExplainResult(
            predictions=(),
            maps=types.MappingProxyType({}),
            reconstruction=None,
            geometry=_geometry(result),
            error=from_code(e.code, e.message, e.field),
            **common,  # type: ignore[arg-type]
        )
    maps: dict[MapKey, Map] = {}
    for i, m in enumerate(result.maps):
        what = f"results[{index}].maps[{i}] ({m.method}, {m.layer!r}, {m.target})"
        array = decode_tensor(m.data, what)
        if array.ndim not in (2, 3):
            raise Internal(f"malformed response: {what} has {array.ndim} dimensions")
        key = MapKey(m.method, m.layer, int(m.target))
        if key in maps:
            raise Internal(f"malformed response: duplicate map {tuple(key)}")
        error = float(m.completeness_error) if m.HasField("completeness_error") else None
        maps[key] = Map(key.method, key.layer, key.target, frozen(array), error)
    reconstruction = None
    if result.HasField("reconstruction") and result.reconstruction.data:
        rec = decode_tensor(result.reconstruction, f"results[{index}].reconstruction")
        if rec.ndim == 3:
            rec = rec.transpose(1, 2, 0)
        reconstruction = frozen(rec)
    predictions = tuple(
        Prediction(class_id=int(p.class_id), label=p.label, score=float(p.score), logit=float(p.logit))
        for p in result.predictions
    )
    return ExplainResult(
        predictions=predictions,
        maps=types.MappingProxyType(maps),
        reconstruction=reconstruction,
        geometry=_geometry(result),
        error=None,
        feature_maps=_feature_maps(result, index),
        consistency=_agreements(result, index),
        **common,  # type: ignore[arg-type]
    )


def _feature_maps(result: explain_pb2.ImageResult, index: int) -> tuple[FeatureMap, ...]:
    out = []
    for i, f in enumerate(result.feature_maps):
        array = decode_tensor(f.data, f"results[{index}].feature_maps[{i}] ({f.layer}, {f.channel})")
        if array.ndim != 2:
            raise Internal(f"malformed response: feature map {i} of result {index} has shape {list(array.shape)}")
        out.append(FeatureMap(f.layer, int(f.channel), float(f.score), int(f.target), frozen(array)))
    return tuple(out)


def _agreements(result: explain_pb2.ImageResult, index: int) -> tuple[Agreement, ...]:
    out = []
    for i, a in enumerate(result.consistency):
        mapped = None
        if a.HasField("mapped"):
            mapped = frozen(decode_tensor(a.mapped, f"results[{index}].consistency[{i}].mapped"))
        out.append(
            Agreement(
                method=a.method,
                layer=a.layer,
                target=int(a.target),
                transform=transform_name(a.transform),
                spearman=float(a.spearman),
                iou=float(a.iou),
                coverage=float(a.coverage),
                mapped=mapped,
            )
        )
    return tuple(out)


def decode_explain_response(
    payload: bytes, expected: int, start: int, round_trip_ms: float
) -> tuple[explain_pb2.ExplainResponse, list[ExplainResult]]:
    """Parses a ``PredictionResponse.prediction`` payload into per-image results.

    Raises:
        CamserveError: The whole request was rejected in band (the matching subclass), or the response cannot
            be read (Internal).
    """
    response = explain_pb2.ExplainResponse()
    try:
        response.ParseFromString(payload)
    except Exception as exc:  # protobuf raises DecodeError (or others across versions); all mean unreadable
        raise Internal(f"malformed response: not an ExplainResponse ({type(exc).__name__})") from None
    if response.HasField("error") and response.error.code:
        e = response.error
        raise from_code(e.code, e.message, e.field)
    if len(response.results) != expected:
        raise Internal(f"malformed response: {len(response.results)} results for {expected} images")
    results = [decode_image_result(r, start + i, response, round_trip_ms) for i, r in enumerate(response.results)]
    return response, results
