"""Protobuf answers: the engine's results, errors and model descriptions as ``camserve.v1`` messages.

:func:`encode_response` writes the engine's :class:`~handlers.engine.Explanation` (or
:class:`~handlers.engine.VAEExplanation`) of every image straight into an ``ExplainResponse``, maps in request order and
in the requested encoding and resolution; :func:`error_message` is the one mapping from an exception to an in-band
``Error``; :func:`model_info` describes the loaded model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

import torch
from camserve_proto.camserve.v1 import explain_pb2

from handlers.engine import Agreement, Explanation, MapKey, VAEExplanation
from handlers.engine.errors import InternalError
from handlers.preprocess import Geometry
from handlers.serving._errors import to_camserve_error
from handlers.serving._maps import Encoded, EncodingName, encode_array, resize_map
from handlers.serving._types import Capabilities, ImageFailure, ParsedRequest, Timing

__all__ = [
    "describe_response",
    "encode_response",
    "error_message",
    "error_response",
    "model_info",
    "model_info_json",
    "ordered_agreements",
    "ordered_maps",
    "reconstruction_of",
]

_TRANSFORM_ENUM: Final[dict[str, explain_pb2.Transform]] = {
    "hflip": explain_pb2.TRANSFORM_HFLIP,
    "shift": explain_pb2.TRANSFORM_SHIFT,
    "rotate": explain_pb2.TRANSFORM_ROTATE,
}
_ENCODING_ENUM: Final[dict[str, explain_pb2.Encoding]] = {
    "FLOAT16": explain_pb2.FLOAT16,
    "FLOAT32": explain_pb2.FLOAT32,
    "UINT8": explain_pb2.UINT8,
    "PNG": explain_pb2.PNG,
}


def error_message(exc: BaseException, *, field_prefix: str = "") -> explain_pb2.Error:
    """The in-band ``Error`` for any exception; the one place that maps errors to codes and messages."""
    err = to_camserve_error(exc)
    path = err.field
    if field_prefix and path:
        path = f"{field_prefix}.{path}"
    return explain_pb2.Error(code=err.code, message=err.message, field=path)


def ordered_maps(parsed: ParsedRequest, result: Explanation) -> list[tuple[MapKey, torch.Tensor]]:
    """The engine's maps in request order: methods, then layers, then targets (top-k rank, requested class or region
    order)."""
    method_rank = {m: i for i, m in enumerate(parsed.methods)}
    layer_rank = {layer: i for i, layer in enumerate(parsed.layers)}
    target_rank = {int(t): i for i, t in enumerate(result.targets)}
    last = len(method_rank) + len(layer_rank) + len(target_rank)
    return sorted(
        result.maps.items(),
        key=lambda item: (
            method_rank.get(item[0].method, last),
            layer_rank.get(item[0].layer, -1),
            target_rank.get(int(item[0].target), last),
        ),
    )


def ordered_agreements(maps: list[tuple[MapKey, torch.Tensor]], result: Explanation) -> list[Agreement]:
    """The consistency check's agreements with maps in response order (``ordered_maps``), transforms as computed."""
    rank = {key: i for i, (key, _) in enumerate(maps)}
    return sorted(result.consistency, key=lambda a: rank.get(a.key, len(rank)))


def reconstruction_of(result: Explanation) -> torch.Tensor | None:
    """The VAE reconstruction ``[3, H, W]`` of a result, ``None`` for a classifier's."""
    return result.reconstruction if isinstance(result, VAEExplanation) else None


def _encode_map(values: torch.Tensor, parsed: ParsedRequest, caps: Capabilities, encoding: EncodingName) -> Encoded:
    values = values.detach().to("cpu", torch.float32)
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
    outcomes: Mapping[int, Explanation | BaseException],
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
        outcomes: By image index: the engine's result, or the error that stopped that image's group.
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
            result.predictions.add(class_id=p.class_id, label=p.label or "", score=p.score, logit=p.logit)
        maps = ordered_maps(parsed, outcome)
        for key, values in maps:
            encoded = _encode_map(values, parsed, caps, parsed.output.encoding)
            entry = result.maps.add(
                method=key.method, layer=key.layer, target=int(key.target), data=_tensor_message(encoded)
            )
            if key in outcome.completeness_errors:
                entry.completeness_error = outcome.completeness_errors[key]
        _add_insight(result, outcome, maps, parsed, caps)
        reconstruction = reconstruction_of(outcome)
        if parsed.output.include_reconstruction and reconstruction is not None:
            result.reconstruction.CopyFrom(_tensor_message(encode_array(reconstruction, parsed.output.encoding)))
    return response


def _add_insight(
    result: explain_pb2.ImageResult,
    outcome: Explanation,
    maps: list[tuple[MapKey, torch.Tensor]],
    parsed: ParsedRequest,
    caps: Capabilities,
) -> None:
    """Feature maps and consistency agreements of one image, when the request asked for them."""
    encoding = parsed.output.encoding
    for f in outcome.feature_maps:
        data = _tensor_message(_encode_map(f.values, parsed, caps, encoding))
        result.feature_maps.add(layer=f.layer, channel=f.channel, score=f.score, target=f.target, data=data)
    for a in ordered_agreements(maps, outcome):
        entry = result.consistency.add(
            method=a.key.method,
            layer=a.key.layer,
            target=int(a.key.target),
            transform=_TRANSFORM_ENUM[a.transform],
            spearman=a.spearman,
            iou=a.iou,
            coverage=a.coverage,
        )
        if parsed.insight.consistency_maps:
            entry.mapped.CopyFrom(_tensor_message(encode_array(a.mapped.detach().to("cpu", torch.float32), encoding)))


def error_response(
    exc: BaseException, *, request_id: str = "", model_name: str = "", model_version: str = ""
) -> explain_pb2.ExplainResponse:
    """A response that rejects the whole request in band."""
    response = explain_pb2.ExplainResponse(model_name=model_name, model_version=model_version, request_id=request_id)
    response.error.CopyFrom(error_message(exc))
    return response


def describe_response(
    caps: Capabilities, *, request_id: str, model_name: str, model_version: str, versions: Mapping[str, str]
) -> explain_pb2.ExplainResponse:
    """The answer to ``ExplainRequest.describe``: the model's ``ModelInfo`` and the server's versions."""
    response = explain_pb2.ExplainResponse(model_name=model_name, model_version=model_version, request_id=request_id)
    response.model_info.CopyFrom(model_info(caps))
    response.versions.update(versions)
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
        method_info=[_method_info(name, caps) for name in caps.methods if name in caps.method_costs],
    )


def _method_info(name: str, caps: Capabilities) -> explain_pb2.MethodInfo:
    """A method's declared cost and this model's bounds of what it scales with."""
    cost, limits = caps.method_costs[name], caps.limits
    bounds = {"steps": limits.max_steps, "samples": limits.max_samples, "channels": limits.max_channels}
    info = explain_pb2.MethodInfo(
        name=name,
        forwards=cost.forwards,
        backwards=cost.backwards,
        per=list(cost.per),
        fixed_forwards=cost.fixed_forwards,
    )
    info.bounds.update({unit: bounds[unit] for unit in cost.per})
    info.bounds["passes"] = limits.max_passes
    return info


def model_info_json(caps: Capabilities, *, model_name: str) -> bytes:
    """``ModelInfo`` as JSON (TorchServe's management describe API and REST describe calls)."""
    from google.protobuf.json_format import MessageToDict

    body = {"model": model_name, **MessageToDict(model_info(caps), preserving_proto_field_name=True)}
    return json.dumps(body, indent=1).encode()
