"""The gateway's wire checks on raw bytes: the envelope refused with INVALID_ARGUMENT, the deadline entry merged."""

from __future__ import annotations

import grpc
import pytest
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2

from deploy._gateway_wire import Refused, check_envelope, deadline_entry, upstream_status


def _request(**fields: object) -> bytes:
    return inference_pb2.PredictionsRequest(**fields).SerializeToString()  # type: ignore[arg-type]


def test_envelope_names_the_model() -> None:
    assert check_envelope(_request(model_name="shapes", input={"request": b"x"})) == "shapes"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"\xff\xff\xff", "not a PredictionsRequest"),
        (b"\x0a\x05ab", "not a PredictionsRequest"),  # a length prefix past the end of the bytes
        (_request(input={"request": b"x"}), "model_name is required"),
        (_request(model_name="shapes", input={"other": b"x"}), "input has no 'request' entry (keys: 'other')"),
        (_request(model_name="shapes"), "keys: none"),
    ],
)
def test_bad_envelopes_are_invalid_argument(raw: bytes, needle: str) -> None:
    with pytest.raises(Refused) as caught:
        check_envelope(raw)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in caught.value.details


def test_deadline_entry_merges_into_the_request_bytes() -> None:
    raw = _request(model_name="shapes", input={"request": b"payload"}) + deadline_entry("camserve-deadline-ms", 1234)
    merged = inference_pb2.PredictionsRequest.FromString(raw)
    assert merged.model_name == "shapes"
    assert dict(merged.input) == {"request": b"payload", "camserve-deadline-ms": b"1234"}


def test_upstream_status_corrects_torchserve_codes() -> None:
    assert upstream_status(grpc.StatusCode.INTERNAL, "Worker died.")[0] == grpc.StatusCode.UNAVAILABLE
    assert upstream_status(grpc.StatusCode.INTERNAL, "Model not found: m")[0] == grpc.StatusCode.NOT_FOUND
    assert upstream_status(grpc.StatusCode.INVALID_ARGUMENT, "bad") == (grpc.StatusCode.INVALID_ARGUMENT, "bad")
