"""The REST dialect for people with curl: a raw image and form fields in, readable JSON out.

A raw image POSTed to ``/predictions/<model>`` becomes an ``ExplainRequest`` here (:func:`request_from_rest`: the
multipart form fields ``methods``, ``layers``, ``top_k``, ``regions``), runs like any other request, and is answered
by :func:`encode_json` (predictions, maps as base64 PNG plus small value lists, geometry, timing) or
:func:`error_json`, with a real HTTP status.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import torch
from camserve_proto.camserve.v1 import explain_pb2

from handlers.engine import Explanation, MapKey
from handlers.engine.errors import InternalError, InvalidArgumentError
from handlers.serving._encode import error_message, ordered_agreements, ordered_maps, reconstruction_of
from handlers.serving._errors import http_status
from handlers.serving._maps import encode_array
from handlers.serving._rest_options import OPTION_FIELDS, options_from_form
from handlers.serving._types import ImageFailure, ParsedRequest, Timing

__all__ = ["JSON_VALUES_LIMIT", "REST_PARAMETERS", "encode_json", "error_json", "request_from_rest"]

#: Maps with at most this many values also appear as nested lists in the REST JSON answer (e.g. a 7x7 Grad-CAM).
JSON_VALUES_LIMIT: Final = 1024
#: Options a REST raw-image call may carry as multipart form fields (TorchServe 0.12 drops query strings).
REST_PARAMETERS: Final = ("methods", "layers", "top_k", "regions", "feature_maps", "consistency", *OPTION_FIELDS)
_REST_TRANSFORMS: Final = {
    "hflip": explain_pb2.TRANSFORM_HFLIP,
    "shift": explain_pb2.TRANSFORM_SHIFT,
    "rotate": explain_pb2.TRANSFORM_ROTATE,
}


def request_from_rest(body: bytes, params: Mapping[str, str]) -> explain_pb2.ExplainRequest:
    """Builds the ``ExplainRequest`` for a REST raw-image call: the image and, optionally, a few options.

    A plain body (``curl -T cat.jpg URL``) uses the model's defaults. Options need a multipart form, whose other
    fields TorchServe passes on as item keys (it drops query strings): ``curl -F data=@cat.jpg -F
    methods=gradcam,saliency -F top_k=3 URL``. Accepted fields (comma-separated lists): ``methods``, ``layers``,
    ``top_k``, ``regions=x0,y0,x1,y1;x0,y0,x1,y1`` (VAE boxes), ``feature_maps=N`` (the top N channels of each
    layer by mean activation), ``consistency=hflip,shift,rotate`` (or ``all``: a consistency check), and the method
    options ``steps``, ``rule``, ``baseline``, ``samples``, ``noise``, ``seed`` (as in ``MethodOptions``).

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
        msg.target.top_k = _positive_int(params["top_k"], "top_k")
    if "feature_maps" in params:
        msg.feature_maps.top_n = _positive_int(params["feature_maps"], "feature_maps")
    if "consistency" in params:
        names = _split(params["consistency"])
        if names == ["all"]:
            names = list(_REST_TRANSFORMS)
        for name in names:
            if name not in _REST_TRANSFORMS:
                raise InvalidArgumentError(
                    f"consistency is 'all' or a list of {', '.join(_REST_TRANSFORMS)}; got {params['consistency']!r}",
                    field="consistency",
                )
        if not names:
            raise InvalidArgumentError("consistency is empty; use 'all' or a list of transforms", field="consistency")
        msg.consistency.transforms.extend(_REST_TRANSFORMS[name] for name in names)
    for i, text in enumerate(p for p in params.get("regions", "").split(";") if p.strip()):
        try:
            x0, y0, x1, y1 = (int(v) for v in text.split(","))
        except ValueError as exc:
            raise InvalidArgumentError(
                f"a region is x0,y0,x1,y1 (integers), got {text!r}", field=f"regions[{i}]"
            ) from exc
        msg.regions.add(box=explain_pb2.Box(x0=x0, y0=y0, x1=x1, y1=y1))
    options = options_from_form(params)
    if options is not None:
        msg.options.CopyFrom(options)
    return msg


def _positive_int(text: str, field: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise InvalidArgumentError(f"{field} must be an integer, got {text!r}", field=field) from exc
    if value < 1:
        raise InvalidArgumentError(f"{field} must be at least 1, got {value}", field=field)
    return value


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _json_number(value: float) -> float:
    return float(f"{value:.4g}")


def _json_values(array: np.ndarray) -> Any:
    return np.vectorize(_json_number, otypes=[float])(array).tolist()


def _json_score(value: float) -> float | None:
    return None if math.isnan(value) else _json_number(value)


def _json_insight(outcome: Explanation, maps: list[tuple[MapKey, torch.Tensor]], with_maps: bool) -> dict[str, Any]:
    """The feature maps and consistency agreements of a REST answer (only the keys the request asked for)."""
    body: dict[str, Any] = {}
    if outcome.feature_maps:
        body["feature_maps"] = [
            _json_map(
                {"layer": f.layer, "channel": f.channel, "score": _json_number(f.score), "target": f.target}, f.values
            )
            for f in outcome.feature_maps
        ]
    agreements = ordered_agreements(maps, outcome)
    if agreements:
        body["consistency"] = []
        for a in agreements:
            entry: dict[str, Any] = {
                "method": a.key.method,
                "layer": a.key.layer,
                "target": int(a.key.target),
                "transform": a.transform,
                "spearman": _json_score(a.spearman),
                "iou": _json_score(a.iou),
                "coverage": _json_number(a.coverage),
            }
            if with_maps:
                entry["png"] = base64.b64encode(encode_array(a.mapped, "PNG").data).decode()
            body["consistency"].append(entry)
    return body


def _json_map(address: dict[str, Any], values: torch.Tensor, completeness: float | None = None) -> dict[str, Any]:
    as_png = encode_array(values, "PNG")
    entry: dict[str, Any] = {
        **address,
        "shape": list(as_png.shape),
        "min": _json_number(as_png.value_min),
        "max": _json_number(as_png.value_max),
    }
    if completeness is not None:
        entry["completeness_error"] = _json_number(completeness)
    if math.prod(as_png.shape) <= JSON_VALUES_LIMIT:
        entry["values"] = _json_values(values.detach().to("cpu", torch.float32).numpy())
    entry["png"] = base64.b64encode(as_png.data).decode()
    return entry


def encode_json(
    parsed: ParsedRequest,
    outcomes: Mapping[int, Explanation | BaseException],
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
    8x8), ``values`` as nested lists with 4 significant digits; Integrated Gradients maps add ``completeness_error``.
    VAE answers add ``"region"`` indices as ``target``.
    Errors: ``{"error": {"code": ..., "message": ..., "field": ...}}`` with HTTP status 400 / 404 / 413 / 500 / 503.
    """
    [image] = parsed.images
    if isinstance(image, ImageFailure):
        return error_json(image.error, rest_body=True)
    outcome = outcomes.get(image.index) or InternalError("no result was produced for this image")
    if isinstance(outcome, BaseException):
        return error_json(outcome)
    g = image.geometry
    ordered = ordered_maps(parsed, outcome)
    maps = [
        _json_map(
            {"method": key.method, "layer": key.layer, "target": int(key.target)},
            values,
            outcome.completeness_errors.get(key),
        )
        for key, values in ordered
    ]
    encode_ms = timing.encode_ms if encode_start is None else (time.perf_counter() - encode_start) * 1000.0
    body: dict[str, Any] = {
        "model": model_name,
        "version": model_version,
        "predictions": [
            {
                "class_id": p.class_id,
                "label": p.label or "",
                "score": _json_number(p.score),
                "logit": _json_number(p.logit),
            }
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
    body.update(_json_insight(outcome, ordered, parsed.insight.consistency_maps))
    reconstruction = reconstruction_of(outcome)
    if reconstruction is not None and parsed.output.include_reconstruction:
        body["reconstruction_png"] = base64.b64encode(encode_array(reconstruction, "PNG").data).decode()
    return 200, json.dumps(body, indent=1).encode()


def error_json(exc: BaseException, *, rest_body: bool = False) -> tuple[int, bytes]:
    """``(http_status, JSON)`` for an error on the REST JSON path; image field paths are reported as ``body``."""
    err = error_message(exc)
    path = err.field
    if rest_body and path.startswith("images[0]"):
        path = "body"  # the REST caller sent the image as the request body
    body = {"error": {"code": err.code, "message": err.message, "field": path}}
    return http_status(err.code), json.dumps(body, indent=1).encode()
