"""Bad input over REST (what curl users send), one table: HTTP status, a JSON message naming the problem, same worker.

Raw images go as the request body (``curl -T``) or as a multipart form with option fields (``curl -F``); an
``ExplainRequest`` goes as ``application/x-protobuf`` and is answered in band (HTTP 200), as over gRPC. After each
case a good gRPC request is answered by the worker process that was serving before (:func:`still_serving`).

TorchServe's frontend answers routing and authorization problems itself, as ``{"code", "type", "message"}``
(it says 400 for a bad key); the handler answers everything else as ``{"error": {"code", "message", "field"}}``.
The gRPC table (test_bad_input_grpc.py) has the cases that only the protobuf contract can express.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from conftest import CLASSIFIER, VAE
from PIL import Image
from reliability_helpers import RestReply, encode, exif_rotated_jpeg, multipart, png, rest_call, shapes, zero_bomb

pytestmark = pytest.mark.integration

GOOD = png(shapes(1, start=800)[0])
JPEG = encode(Image.fromarray(shapes(1, start=801)[0]), "JPEG", quality=90)
NOT_AN_IMAGE = r"not a readable image; accepted formats: PNG, JPEG, WEBP, BMP, GIF, TIFF"
TOKEN = r"Token Authorization failed"
# The engine's region rule (handlers/engine/_vae/_regions.py), the one owner of its words; fields name the coordinate.
BOX_RULE = (
    r"box (is inverted: \w+=\d+ < \w+=\d+|is empty: \w+=\d+ == \w+=\d+"
    r"|[xy][01]=-?\d+ is out of bounds: must be in \[0, 64\])"
)


@dataclass(frozen=True)
class Call:
    """One HTTP call: the path under the REST base URL, the body, its content type and the key to send."""

    path: str
    body: bytes | None
    content_type: str | None = "application/octet-stream"
    token: str = "inference"  # "inference", "none", or a literal key
    headers: Mapping[str, str] | None = None


def raw_body(model: str, body: bytes, **kwargs: Any) -> Call:
    return Call(f"/predictions/{model}", body, **kwargs)


def form(model: str, fields: Mapping[str, str | bytes]) -> Call:
    body, content_type = multipart(fields)
    return Call(f"/predictions/{model}", body, content_type)


def case(name: str, model: str, call: Call, status: int | str, message: str, code: str = "", field: str = "") -> Any:
    statuses = {int(s) for s in str(status).split("|")}
    return pytest.param(model, call, statuses, message, code, field, id=name)


CASES = [
    # --- routing and authorization (TorchServe's frontend)
    case("unknown-model", CLASSIFIER, raw_body("no-such-model", GOOD), 404, r"Model not found: no-such-model"),
    case("no-model-in-path", CLASSIFIER, Call("/predictions/", GOOD), 404, r"not found"),
    case("missing-token", CLASSIFIER, raw_body(CLASSIFIER, GOOD, token="none"), "400|401|403", TOKEN),
    case("wrong-token", CLASSIFIER, raw_body(CLASSIFIER, GOOD, token="0123456789abcdef"), "400|401|403", TOKEN),
    case(
        "token-without-bearer",
        CLASSIFIER,
        raw_body(CLASSIFIER, GOOD, token="none", headers={"Authorization": "Bearer"}),
        "400|401|403",
        TOKEN,
    ),
    # --- bodies
    case("empty-body", CLASSIFIER, raw_body(CLASSIFIER, b""), 400, r"the image is empty", "INVALID_ARGUMENT", "body"),
    case(
        "empty-form-file",
        CLASSIFIER,
        form(CLASSIFIER, {"data": b""}),
        400,
        r"the image is empty",
        "INVALID_ARGUMENT",
        "body",
    ),
    case(
        "random-bytes",
        CLASSIFIER,
        raw_body(CLASSIFIER, np.random.default_rng(17).bytes(4096)),
        400,
        NOT_AN_IMAGE,
        "INVALID_ARGUMENT",
        "body",
    ),
    case(
        "truncated-jpeg",
        CLASSIFIER,
        raw_body(CLASSIFIER, JPEG[: len(JPEG) // 2]),
        400,
        r"truncated or corrupt",
        "INVALID_ARGUMENT",
        "body",
    ),
    case(
        "bomb-48kB-20000x20000",
        CLASSIFIER,
        raw_body(CLASSIFIER, zero_bomb(20_000, 20_000)),
        413,
        r"too many pixels",
        "RESOURCE_EXHAUSTED",
        "body",
    ),
    case(
        "bomb-12kB-10000x10000",
        CLASSIFIER,
        raw_body(CLASSIFIER, zero_bomb(10_000, 10_000)),
        413,
        r"too many pixels",
        "RESOURCE_EXHAUSTED",
        "body",
    ),
    case(
        "format-ppm",
        CLASSIFIER,
        raw_body(CLASSIFIER, encode(Image.fromarray(shapes(1)[0]), "PPM")),
        400,
        NOT_AN_IMAGE,
        "INVALID_ARGUMENT",
        "body",
    ),
    case(
        "json-body",
        CLASSIFIER,
        raw_body(CLASSIFIER, b'{"image": "cat.jpg"}', content_type="application/json"),
        400,
        r"JSON bodies are not accepted",
        "INVALID_ARGUMENT",
        "body",
    ),
    case(
        "form-without-image",
        CLASSIFIER,
        form(CLASSIFIER, {"image": GOOD}),
        400,
        r"no image in the request",
        "INVALID_ARGUMENT",
    ),
    # --- form fields
    case(
        "unknown-method",
        CLASSIFIER,
        form(CLASSIFIER, {"data": GOOD, "methods": "gradcam,telepathy"}),
        400,
        r"method 'telepathy' is not available",
        "INVALID_ARGUMENT",
        "methods[1]",
    ),
    case(
        "unknown-layer",
        CLASSIFIER,
        form(CLASSIFIER, {"data": GOOD, "layers": "no.such.layer"}),
        404,
        r"layer 'no.such.layer' is not an explainable layer",
        "NOT_FOUND",
        "layers[0]",
    ),
    case(
        "top-k-not-a-number",
        CLASSIFIER,
        form(CLASSIFIER, {"data": GOOD, "top_k": "three"}),
        400,
        r"top_k must be an integer, got 'three'",
        "INVALID_ARGUMENT",
        "top_k",
    ),
    case(
        "top-k-fraction",
        CLASSIFIER,
        form(CLASSIFIER, {"data": GOOD, "top_k": "2.5"}),
        400,
        r"top_k must be an integer",
        "INVALID_ARGUMENT",
        "top_k",
    ),
    case(
        "top-k-zero",
        CLASSIFIER,
        form(CLASSIFIER, {"data": GOOD, "top_k": "0"}),
        400,
        r"top_k must be at least 1",
        "INVALID_ARGUMENT",
        "top_k",
    ),
    case(
        "top-k-over-classes",
        CLASSIFIER,
        form(CLASSIFIER, {"data": GOOD, "top_k": "9"}),
        400,
        r"top_k is 9; it must be at most 6",
        "INVALID_ARGUMENT",
        "target.top_k",
    ),
    case(
        "unknown-form-field",
        CLASSIFIER,
        form(CLASSIFIER, {"data": GOOD, "target": "3"}),
        400,
        r"unknown form field\(s\) \['target'\]",
        "INVALID_ARGUMENT",
        "target",
    ),
    case(
        "region-three-numbers",
        VAE,
        form(VAE, {"data": GOOD, "regions": "1,2,3"}),
        400,
        r"a region is x0,y0,x1,y1 \(integers\), got '1,2,3'",
        "INVALID_ARGUMENT",
        "regions[0]",
    ),
    case(
        "region-not-numbers",
        VAE,
        form(VAE, {"data": GOOD, "regions": "8,8,24,24;a,b,c,d"}),
        400,
        r"got 'a,b,c,d'",
        "INVALID_ARGUMENT",
        "regions[1]",
    ),
    case(
        "region-out-of-bounds",
        VAE,
        form(VAE, {"data": GOOD, "regions": "0,0,99,99"}),
        400,
        BOX_RULE,
        "INVALID_ARGUMENT",
        "regions[0].box",
    ),
    case(
        "region-inverted",
        VAE,
        form(VAE, {"data": GOOD, "regions": "40,40,8,8"}),
        400,
        BOX_RULE,
        "INVALID_ARGUMENT",
        "regions[0].box",
    ),
    case(
        "region-empty",
        VAE,
        form(VAE, {"data": GOOD, "regions": "8,8,8,30"}),
        400,
        BOX_RULE,
        "INVALID_ARGUMENT",
        "regions[0].box",
    ),
    # --- protobuf over REST: errors in band, HTTP 200
    case(
        "protobuf-garbage",
        CLASSIFIER,
        raw_body(CLASSIFIER, b"\xff\x00 garbage", content_type="application/x-protobuf"),
        200,
        r"not a valid camserve.v1.ExplainRequest",
        "INVALID_ARGUMENT",
        "request",
    ),
    case(
        "protobuf-unknown-layer",
        CLASSIFIER,
        raw_body(
            CLASSIFIER,
            explain_pb2.ExplainRequest(images=[explain_pb2.Image(encoded=GOOD)], layers=["nope"]).SerializeToString(),
            content_type="application/x-protobuf",
        ),
        200,
        r"layer 'nope' is not an explainable layer",
        "NOT_FOUND",
        "layers[0]",
    ),
]


def send(server: Any, call: Call) -> RestReply:
    token = {"inference": server.inference_token, "none": None}.get(call.token, call.token)
    return rest_call(
        server.rest_url + call.path, call.body, token=token, content_type=call.content_type, headers=call.headers
    )


def error_of(reply: RestReply) -> tuple[str, str, str]:
    """(code, message, field) of an error answer: the handler's JSON, TorchServe's JSON, or an ExplainResponse."""
    if reply.content_type.startswith("application/x-protobuf"):
        response = explain_pb2.ExplainResponse.FromString(reply.body)
        error = response.error if response.HasField("error") else response.results[0].error
        return error.code, error.message, error.field
    body = reply.json()
    if "error" in body:
        return body["error"]["code"], body["error"]["message"], body["error"].get("field", "")
    return "", str(body["message"]), ""  # TorchServe's own error document: {"code": 404, "type": ..., "message": ...}


@pytest.mark.parametrize(("model", "call", "statuses", "message", "code", "field"), CASES)
def test_bad_rest_call_gets_its_status_and_message_and_the_worker_lives(
    model: str,
    call: Call,
    statuses: set[int],
    message: str,
    code: str,
    field: str,
    camserve_server: Any,
    pids: Callable[[str], list[int]],
    still_serving: Callable[[str, list[int]], None],
) -> None:
    before = pids(model)
    reply = send(camserve_server, call)
    assert reply.status in statuses, (reply.status, reply.body[:500])
    got_code, got_message, got_field = error_of(reply)
    assert re.search(message, got_message), got_message
    assert got_code == code and got_field.startswith(field), (got_code, got_field)
    still_serving(model, before)


def test_the_rest_table_has_many_distinct_cases() -> None:
    assert len({p.id for p in CASES}) == len(CASES) >= 25


def test_exif_rotated_image_over_rest_reports_the_displayed_geometry(
    camserve_server: Any, pids: Callable[[str], list[int]], still_serving: Callable[[str, list[int]], None]
) -> None:
    before = pids(CLASSIFIER)
    reply = send(camserve_server, raw_body(CLASSIFIER, exif_rotated_jpeg(96, 64)))
    assert reply.status == 200, reply.body[:500]
    answer = json.loads(reply.body)
    assert answer["geometry"] == {"original_size": [64, 96], "crop": [0, 16, 64, 80], "input_size": [64, 64]}
    assert answer["predictions"] and answer["maps"]
    still_serving(CLASSIFIER, before)
