"""Routing: how each TorchServe batch item is answered, and which bytes of it carry the request.

Inputs accepted per item (``data[i]``):

- ``{"request": <ExplainRequest bytes>}`` — gRPC (``PredictionsRequest.input["request"]``) or a REST multipart field
  named ``request``. Answered with ``ExplainResponse`` bytes.
- ``{"body": <bytes>}`` or ``{"data": <bytes>}`` with content type ``application/x-protobuf`` (or
  ``application/protobuf``) — an ``ExplainRequest`` POSTed over REST. Answered with ``ExplainResponse`` bytes and
  that content type; errors stay in band (HTTP 200), exactly as over gRPC.
- ``{"body" | "data": <image bytes>}`` with any other content type — a raw image (``curl -T cat.jpg URL``, or
  multipart ``curl -F data=@cat.jpg -F methods=gradcam -F top_k=3 URL``: form fields ``methods``, ``layers``,
  ``top_k``, ``regions`` arrive as further keys; TorchServe 0.12 drops query strings). Answered with JSON
  (:func:`handlers.serving._rest.encode_json`), with a real HTTP status on errors (400/404/413/500/503).
- ``{"filters": <FiltersRequest bytes>}`` — a model's convolution kernels (gRPC ``input["filters"]``). Answered with
  ``FiltersResponse`` bytes (:mod:`handlers.serving._filters`), errors in band.
- ``{"visualize": <VisualizeRequest bytes>}`` — activation maximisation (gRPC ``input["visualize"]``). Answered with
  ``VisualizeResponse`` bytes (:mod:`handlers.serving._visualize`), errors in band.
- TorchServe's describe call (``GET /models/<name>?customized=true``, header ``describe: True``): ``ModelInfo`` JSON.

Note for curl users: ``curl --data-binary @img.png`` sends ``application/x-www-form-urlencoded``, which TorchServe
parses as a form: the image is mangled or refused before the handler runs (HTTP 500 from the frontend, or an empty
item, which is answered 400 with the right command). Use ``curl -T img.png`` or add
``-H 'Content-Type: application/octet-stream'``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final, Literal, TypeVar

from camserve_proto.camserve.v1 import explain_pb2
from google.protobuf.message import DecodeError

from handlers.engine.errors import DeadlineExceededError, InvalidArgumentError
from handlers.serving._parse import decode_request
from handlers.serving._rest import request_from_rest

__all__ = [
    "BODY_KEYS",
    "DEADLINE_KEY",
    "FILTERS_KEY",
    "PROTOBUF_CONTENT_TYPES",
    "REQUEST_KEY",
    "VISUALIZE_KEY",
    "ReplyKind",
    "check_deadline",
    "direct_message",
    "reply_kind",
    "request_message",
    "set_reply_headers",
]

ReplyKind = Literal["proto", "json", "describe", "filters", "visualize"]

REQUEST_KEY: Final = "request"
FILTERS_KEY: Final = "filters"
VISUALIZE_KEY: Final = "visualize"
BODY_KEYS: Final = ("body", "data")
#: Input key with the caller's deadline (Unix time, ms), added by the gateway (deploy/gateway.py): an item whose
#: deadline has passed while it waited in TorchServe's queue is answered DEADLINE_EXCEEDED without being computed.
DEADLINE_KEY: Final = "camserve-deadline-ms"
PROTOBUF_CONTENT_TYPES: Final = ("application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf")


def _header(context: Any, index: int, key: str) -> Any:
    """A request header or per-parameter header dict of item ``index``; ``None`` when absent or not provided."""
    getter = getattr(context, "get_request_header", None)
    if getter is None:
        return None
    try:
        return getter(index, key)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _content_type(context: Any, index: int, key: str) -> str:
    """The content type of parameter ``key`` of item ``index`` (TorchServe keeps it per parameter)."""
    value = _header(context, index, key)
    if isinstance(value, Mapping):
        for name, content_type in value.items():
            if str(name).lower() == "content-type" and content_type:
                return str(content_type).split(";")[0].strip().lower()
    getter = getattr(context, "get_all_request_header", None)
    if getter is not None:
        try:
            headers = getter(index) or {}
        except (AttributeError, IndexError, KeyError, TypeError):
            headers = {}
        for name, content_type in headers.items():
            if str(name).lower() == "content-type" and isinstance(content_type, str):
                return content_type.split(";")[0].strip().lower()
    return ""


def reply_kind(index: int, row: Any, context: Any) -> ReplyKind:
    """How item ``index`` is answered (never raises): see the module docstring for the rules."""
    if str(_header(context, index, "describe")) == "True":
        return "describe"
    if isinstance(row, Mapping) and REQUEST_KEY not in row:
        if FILTERS_KEY in row:
            return "filters"
        if VISUALIZE_KEY in row:
            return "visualize"
    if not isinstance(row, Mapping) or REQUEST_KEY in row:
        return "proto"
    for key in BODY_KEYS:
        if key in row:
            return "proto" if _content_type(context, index, key) in PROTOBUF_CONTENT_TYPES else "json"
    return "json"


def _as_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")  # TorchServe decodes text/* bodies; this restores the bytes
    raise InvalidArgumentError(
        f"{name} must be binary; got {type(value).__name__} (JSON bodies are not accepted: send a raw image or "
        "an ExplainRequest as application/x-protobuf)",
        field=name,
    )


def _as_text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(f"parameter {name} is not UTF-8 text", field=name) from exc
    raise InvalidArgumentError(f"parameter {name} must be text, got {type(value).__name__}", field=name)


def request_message(row: Any, reply: ReplyKind) -> explain_pb2.ExplainRequest:
    """The ``ExplainRequest`` carried by one batch item (built from the image and form fields for REST raw images).

    Raises:
        InvalidArgumentError: Malformed protobuf bytes, a JSON body, or no usable input at all.
    """
    if not isinstance(row, Mapping):
        raise InvalidArgumentError(f"unexpected input of type {type(row).__name__}", field="request")
    body_key = next((k for k in BODY_KEYS if k in row), None)
    if REQUEST_KEY in row or (reply == "proto" and body_key is not None):
        key = REQUEST_KEY if REQUEST_KEY in row else str(body_key)
        return decode_request(_as_bytes(row[key], key))
    if body_key is None:
        raise InvalidArgumentError(
            "no image in the request: send the image as the whole request body with a binary content type "
            "(curl -T image.png URL, or curl -H 'Content-Type: application/octet-stream' --data-binary @image.png "
            "URL), or an ExplainRequest as 'request'",
            field="body",
        )
    body = _as_bytes(row[body_key], body_key)
    params = {str(k): _as_text(v, str(k)) for k, v in row.items() if k not in (body_key, DEADLINE_KEY)}
    return request_from_rest(body, params)


M = TypeVar("M", explain_pb2.FiltersRequest, explain_pb2.VisualizeRequest)


def direct_message(row: Mapping[str, Any], key: str, message: type[M]) -> M:
    """The ``FiltersRequest`` / ``VisualizeRequest`` an item carries under ``key`` (checked like ``request``).

    Raises:
        InvalidArgumentError: Not binary, or not a valid message of that type (field ``key``).
    """
    raw = row[key]
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InvalidArgumentError(
            f"{key} must be {message.DESCRIPTOR.name} bytes, got {type(raw).__name__}", field=key
        )
    msg = message()
    try:
        msg.ParseFromString(bytes(raw))
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidArgumentError(
            f"the input is not a valid camserve.v1.{message.DESCRIPTOR.name}", field=key
        ) from exc
    return msg


def set_reply_headers(context: Any, index: int, content_type: str, status: int | None) -> None:
    """Sets the answer's content type and (REST JSON only) HTTP status; gRPC ignores both."""
    processors = getattr(context, "request_processor", None)
    if not isinstance(processors, Sequence) or index >= len(processors) or processors[index] is None:
        return
    context.set_response_content_type(index, content_type)
    if status is not None and status != HTTPStatus.OK:
        context.set_response_status(status, HTTPStatus(status).phrase, idx=index)


def check_deadline(row: Any, now: float | None = None) -> None:
    """Raises DeadlineExceededError when the item carries a deadline (:data:`DEADLINE_KEY`) that has passed.

    Its caller has gone (the gateway drops the answer), so the item is not decoded or computed: expired jobs cost
    the worker microseconds instead of a full explanation.
    """
    if not isinstance(row, Mapping) or DEADLINE_KEY not in row:
        return
    text = _as_text(row[DEADLINE_KEY], DEADLINE_KEY)
    try:
        deadline_ms = float(text)
    except ValueError as exc:
        message = f"{DEADLINE_KEY} must be a Unix time in ms, got {text[:40]!r}"
        raise InvalidArgumentError(message, field=DEADLINE_KEY) from exc
    late_ms = (time.time() if now is None else now) * 1000.0 - deadline_ms
    if late_ms > 0:
        raise DeadlineExceededError(
            f"the caller's deadline passed {late_ms:.0f} ms before the request left the queue; it was not computed"
        )
