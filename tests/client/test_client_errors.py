"""Every failure becomes one CamserveError subclass, mapped in one place, with the server's message and field kept."""

from __future__ import annotations

import pickle
from concurrent import futures
from typing import Any

import camserve
import grpc
import pytest
from camserve.errors import from_code
from camserve_proto.camserve.v1 import explain_pb2
from conftest import FakeServer

EXPECTED = {
    "INVALID_ARGUMENT": camserve.InvalidArgument,
    "OUT_OF_RANGE": camserve.InvalidArgument,
    "FAILED_PRECONDITION": camserve.InvalidArgument,
    "ALREADY_EXISTS": camserve.InvalidArgument,
    "NOT_FOUND": camserve.NotFound,
    "UNIMPLEMENTED": camserve.NotFound,
    "UNAUTHENTICATED": camserve.Unauthenticated,
    "PERMISSION_DENIED": camserve.Unauthenticated,
    "RESOURCE_EXHAUSTED": camserve.ResourceExhausted,
    "DEADLINE_EXCEEDED": camserve.DeadlineExceeded,
    "UNAVAILABLE": camserve.Unavailable,
    "INTERNAL": camserve.Internal,
    "UNKNOWN": camserve.Internal,
    "DATA_LOSS": camserve.Internal,
    "ABORTED": camserve.Internal,
    "CANCELLED": camserve.Internal,
}


def test_every_grpc_status_code_has_a_mapping() -> None:
    names = {c.name for c in grpc.StatusCode if c is not grpc.StatusCode.OK}
    assert names == set(EXPECTED)


@pytest.mark.parametrize(("code", "cls"), sorted(EXPECTED.items()))
def test_from_code_maps_and_keeps_message_field_and_code(code: str, cls: type[camserve.CamserveError]) -> None:
    err = from_code(code.lower(), "the server said so", "layers[1]")
    assert type(err) is cls
    assert isinstance(err, camserve.CamserveError)
    assert (err.message, err.field, err.code) == ("the server said so", "layers[1]", code)
    assert "the server said so" in str(err) and "layers[1]" in str(err) and code in str(err)


def test_unknown_code_name_is_internal() -> None:
    err = from_code("SOMETHING_NEW", "?")
    assert type(err) is camserve.Internal and err.code == "SOMETHING_NEW"


def test_torchserve_model_not_found_internal_is_not_found() -> None:
    err = from_code("INTERNAL", "Model not found: x\norg.pytorch.serve.archive.model.ModelNotFoundException")
    assert type(err) is camserve.NotFound and err.code == "INTERNAL"


def test_errors_survive_pickling() -> None:
    err = camserve.InvalidArgument("bad", field="images[0]", code="OUT_OF_RANGE")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is camserve.InvalidArgument
    assert (back.message, back.field, back.code) == ("bad", "images[0]", "OUT_OF_RANGE")


# The status codes a server can send (DEADLINE_EXCEEDED from a server is rare but mapped the same way).
SERVER_CODES = [
    (grpc.StatusCode.INVALID_ARGUMENT, camserve.InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, camserve.NotFound),
    (grpc.StatusCode.PERMISSION_DENIED, camserve.Unauthenticated),
    (grpc.StatusCode.UNAUTHENTICATED, camserve.Unauthenticated),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, camserve.ResourceExhausted),
    (grpc.StatusCode.DEADLINE_EXCEEDED, camserve.DeadlineExceeded),
    (grpc.StatusCode.UNAVAILABLE, camserve.Unavailable),
    (grpc.StatusCode.INTERNAL, camserve.Internal),
    (grpc.StatusCode.UNKNOWN, camserve.Internal),
]


@pytest.mark.parametrize(("status", "cls"), SERVER_CODES, ids=[c.name for c, _ in SERVER_CODES])
def test_grpc_status_from_server_raises_matching_type(
    fake: FakeServer, client_kwargs: dict[str, Any], status: grpc.StatusCode, cls: type[Exception]
) -> None:
    fake.abort_code, fake.abort_message = status, f"server message for {status.name}"
    with camserve.Client(fake.address, retries=1, **client_kwargs) as client, pytest.raises(cls) as info:
        client.explain(b"img", model="shapes-classifier")
    assert f"server message for {status.name}" in info.value.message
    assert info.value.code == status.name


IN_BAND = [
    ("INVALID_ARGUMENT", camserve.InvalidArgument),
    ("NOT_FOUND", camserve.NotFound),
    ("RESOURCE_EXHAUSTED", camserve.ResourceExhausted),
    ("INTERNAL", camserve.Internal),
    ("UNAVAILABLE", camserve.Unavailable),
]


@pytest.mark.parametrize(("code", "cls"), IN_BAND)
def test_in_band_request_error_raises_matching_type(
    fake: FakeServer, client_kwargs: dict[str, Any], code: str, cls: type[camserve.CamserveError]
) -> None:
    def answer(request: explain_pb2.ExplainRequest, model: str, context: object) -> explain_pb2.ExplainResponse:
        response = explain_pb2.ExplainResponse(model_name=model)
        response.error.code, response.error.message, response.error.field = code, "whole request refused", "top_k"
        return response

    fake.answer = answer
    with camserve.Client(fake.address, **client_kwargs) as client, pytest.raises(cls) as info:
        client.explain([b"a", b"b"], model="shapes-classifier")
    assert (info.value.message, info.value.field, info.value.code) == ("whole request refused", "top_k", code)
    assert fake.calls == 1  # in-band errors are answers, never retried


@pytest.mark.parametrize(("code", "cls"), IN_BAND)
def test_in_band_image_error_raises_for_single_image(
    fake: FakeServer, client_kwargs: dict[str, Any], code: str, cls: type[camserve.CamserveError]
) -> None:
    def answer(request: explain_pb2.ExplainRequest, model: str, context: object) -> explain_pb2.ExplainResponse:
        response = explain_pb2.ExplainResponse(model_name=model)
        r = response.results.add(id="0")
        r.error.code, r.error.message, r.error.field = code, "this image", "images[0].encoded"
        return response

    fake.answer = answer
    with camserve.Client(fake.address, **client_kwargs) as client, pytest.raises(cls) as info:
        client.explain(b"a", model="shapes-classifier")
    assert (info.value.message, info.value.field) == ("this image", "images[0].encoded")


def test_unknown_model_raises_not_found(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    with camserve.Client(fake.address, **client_kwargs) as client, pytest.raises(camserve.NotFound) as info:
        client.explain(b"a", model="no-such-model")
    assert "no-such-model" in info.value.message
    assert fake.calls == 1


def test_unimplemented_method_raises_not_found(fake: FakeServer) -> None:
    # models() sent to a server that has no management service (e.g. the inference port of TorchServe)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with (
            camserve.Client(fake.address, management_address=f"127.0.0.1:{port}", timeout=5) as client,
            pytest.raises(camserve.NotFound) as info,
        ):
            client.models()
        assert info.value.code == "UNIMPLEMENTED"
    finally:
        server.stop(None).wait()


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff\xff", b""],
    ids=["garbage", "empty"],
)
def test_unreadable_response_is_internal(
    fake: FakeServer, client_kwargs: dict[str, Any], payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Raw:
        def SerializeToString(self) -> bytes:
            return payload

    fake.answer = lambda r, m, c: Raw()  # type: ignore[assignment,return-value]
    with camserve.Client(fake.address, **client_kwargs) as client, pytest.raises(camserve.Internal) as info:
        client.explain(b"a", model="shapes-classifier")
    assert "malformed response" in info.value.message


def test_maps_with_wrong_byte_count_are_internal(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    def answer(request: explain_pb2.ExplainRequest, model: str, context: object) -> explain_pb2.ExplainResponse:
        response = explain_pb2.ExplainResponse(model_name=model)
        r = response.results.add(id="0")
        r.maps.add(method="gradcam", layer="l", target=0, data=explain_pb2.Tensor(shape=[4, 4], data=b"\x00" * 10))
        return response

    fake.answer = answer
    with camserve.Client(fake.address, **client_kwargs) as client, pytest.raises(camserve.Internal) as info:
        client.explain(b"a", model="shapes-classifier")
    assert "10 bytes for shape [4, 4]" in info.value.message
