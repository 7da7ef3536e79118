"""Deadlines, retries (transport failures only), settings, TLS and message sizes (tokens: test_client_auth.py)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import camserve
import grpc
import numpy as np
import pytest
from camserve._auth import TokenSource
from camserve._transport import CallState, RetryPolicy, management_address_for, resolve_address
from camserve_proto.camserve.v1 import explain_pb2
from conftest import FakeServer, free_port, start_fake, tensor


def test_retries_unavailable_then_answers(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.fail_unavailable = 2
    with camserve.Client(fake.address, retries=3, **client_kwargs) as client:
        assert client.ping() == "Healthy"
    assert fake.calls == 3


def test_retries_are_bounded_and_reported(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.fail_unavailable = 100
    with (
        camserve.Client(fake.address, retries=2, **client_kwargs) as client,
        pytest.raises(camserve.Unavailable) as info,
    ):
        client.ping()
    assert fake.calls == 3
    assert "worker restarting" in info.value.message and "after 3 attempts" in info.value.message


def test_retries_zero_disables_retries(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.fail_unavailable = 1
    with camserve.Client(fake.address, retries=0, **client_kwargs) as client, pytest.raises(camserve.Unavailable):
        client.ping()
    assert fake.calls == 1


@pytest.mark.parametrize(
    "status",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ],
    ids=lambda s: s.name,
)
def test_no_retry_for_rejections(fake: FakeServer, client_kwargs: dict[str, Any], status: grpc.StatusCode) -> None:
    fake.abort_code = status
    with camserve.Client(fake.address, retries=3, **client_kwargs) as client, pytest.raises(camserve.CamserveError):
        client.explain(b"img", model="shapes-classifier")
    assert fake.calls == 1


def test_no_retry_for_in_band_invalid_argument(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    with (
        camserve.Client(fake.address, retries=3, **client_kwargs) as client,
        pytest.raises(camserve.InvalidArgument) as info,
    ):
        client.explain(np.zeros((8, 8, 3), np.uint8), model="shapes-classifier", methods=["nonsense"])
    assert info.value.field == "methods[0]"
    assert fake.calls == 1


def test_deadline_is_enforced_and_not_retried(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.delay = 1.0
    kwargs = {**client_kwargs, "timeout": 10.0}
    with camserve.Client(fake.address, retries=3, **kwargs) as client:
        started = time.monotonic()
        with pytest.raises(camserve.DeadlineExceeded) as info:
            client.explain(np.zeros((8, 8, 3), np.uint8), model="shapes-classifier", timeout=0.2)
        took = time.monotonic() - started
    assert took < 0.9
    assert "deadline 0.2 s" in info.value.message
    assert fake.calls == 1


def test_every_call_carries_a_deadline(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    with camserve.Client(fake.address, **{**client_kwargs, "timeout": 7.0}) as client:
        client.ping()
        client.describe("shapes-classifier")
        client.models()
        client.explain(np.zeros((8, 8, 3), np.uint8), model="shapes-classifier")
        list(client.explain_many([np.zeros((8, 8, 3), np.uint8)] * 2, model="shapes-classifier"))
        client.ping(timeout=2.5)
    assert len(fake.deadlines) == 7
    # grpc sends the deadline with the call; the server sees the time left (a call without one: ~infinite)
    assert all(d is not None and 5.0 < d <= 7.1 for d in fake.deadlines[:-1]), fake.deadlines  # wire rounding
    assert fake.deadlines[-1] is not None and 1.0 < fake.deadlines[-1] <= 2.6


def test_retry_budget_never_outlives_the_deadline(client_kwargs: dict[str, Any]) -> None:
    port = free_port()  # nothing listens: connection refused on every attempt
    kwargs = {**client_kwargs, "backoff": 5.0, "management_address": f"127.0.0.1:{port}"}
    with camserve.Client(f"127.0.0.1:{port}", retries=10, **kwargs) as client:
        started = time.monotonic()
        with pytest.raises(camserve.Unavailable):
            client.ping(timeout=1.0)
        assert time.monotonic() - started < 1.5


def test_connection_refused_is_unavailable_after_retries(client_kwargs: dict[str, Any]) -> None:
    port = free_port()
    kwargs = {**client_kwargs, "management_address": f"127.0.0.1:{port}"}
    with (
        camserve.Client(f"127.0.0.1:{port}", retries=2, **kwargs) as client,
        pytest.raises(camserve.Unavailable) as info,
    ):
        client.ping()
    assert "after 3 attempts" in info.value.message


def test_server_started_after_first_attempt(client_kwargs: dict[str, Any]) -> None:
    port = free_port()
    started: list[FakeServer] = []
    timer = threading.Timer(0.3, lambda: started.append(start_fake(port)))
    kwargs = {**client_kwargs, "backoff": 0.2, "management_address": f"127.0.0.1:{port}"}
    timer.start()
    try:
        with camserve.Client(f"127.0.0.1:{port}", retries=8, **kwargs) as client:
            result = client.explain(np.zeros((8, 8, 3), np.uint8), model="shapes-classifier")
        assert result.ok and result.top is not None
    finally:
        timer.join()
        for server in started:
            server.stop()


def test_survives_server_restart_between_calls(client_kwargs: dict[str, Any]) -> None:
    server = start_fake()
    port = server.port
    kwargs = {**client_kwargs, "backoff": 0.2, "management_address": server.address}
    restarted: list[FakeServer] = []
    try:
        with camserve.Client(server.address, retries=8, **kwargs) as client:
            assert client.ping() == "Healthy"
            server.stop()
            timer = threading.Timer(0.3, lambda: restarted.append(start_fake(port)))
            timer.start()
            result = client.explain(np.zeros((8, 8, 3), np.uint8), model="shapes-classifier")
            timer.join()
        assert result.ok
        assert restarted and restarted[0].calls >= 1
    finally:
        server.stop()
        for s in restarted:
            s.stop()


def test_backoff_grows_exponentially_with_full_jitter() -> None:
    policy = RetryPolicy(retries=5, initial=0.1, maximum=1.0, multiplier=2.0)
    assert [policy.bound(i) for i in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    rng = random.Random(0)
    delays = [policy.delay(3, rng) for _ in range(2000)]
    assert 0.0 <= min(delays) < 0.05 and 0.75 < max(delays) <= 0.8  # uniform over [0, bound]


@pytest.mark.parametrize("bad", [{"retries": -1}, {"timeout": 0}, {"timeout": -3}, {"max_message_bytes": 0}])
def test_bad_settings_raise_invalid_argument(bad: dict[str, object]) -> None:
    with pytest.raises(camserve.InvalidArgument):
        camserve.Client("127.0.0.1:1", **bad)


def test_per_call_timeout_must_be_positive(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    with camserve.Client(fake.address, **client_kwargs) as client, pytest.raises(camserve.InvalidArgument):
        client.ping(timeout=0)
    assert fake.calls == 0


def test_closed_client_raises(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    client = camserve.Client(fake.address, **client_kwargs)
    client.close()
    client.close()
    with pytest.raises(camserve.InvalidArgument, match="closed"):
        client.ping()


def test_address_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_address(None) == "127.0.0.1:7070"
    monkeypatch.setenv("CAMSERVE_ADDRESS", "grpc://10.0.0.1:9000")
    assert resolve_address(None) == "10.0.0.1:9000"
    assert resolve_address("host:1") == "host:1"
    assert management_address_for("host:7070") == "host:7071"
    assert management_address_for("[::1]:7070") == "[::1]:7071"
    with pytest.raises(camserve.InvalidArgument):
        management_address_for("unix-socket-without-port")
    with pytest.raises(camserve.InvalidArgument):
        resolve_address(":7070")


def test_large_responses_fit(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    # 12 MB of float32 map: above grpcio's 4 MiB receive default and TorchServe's 6,553,500 B default cap
    big = np.linspace(0.0, 1.0, 3 * 1000 * 1000, dtype=np.float32).reshape(3, 1000, 1000)

    def answer(request: explain_pb2.ExplainRequest, model: str, context: object) -> explain_pb2.ExplainResponse:
        response = explain_pb2.ExplainResponse(model_name=model)
        r = response.results.add(id="0")
        r.maps.add(method="saliency", layer="", target=0, data=tensor(big, explain_pb2.FLOAT32))
        return response

    fake.answer = answer
    with camserve.Client(fake.address, **client_kwargs) as client:
        result = client.explain(np.zeros((8, 8, 3), np.uint8), model="shapes-classifier", encoding="float32")
    np.testing.assert_array_equal(result.map("saliency").array, big)


def test_small_max_message_bytes_is_enforced(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    with (
        camserve.Client(fake.address, max_message_bytes=1000, retries=0, **client_kwargs) as client,
        pytest.raises(camserve.ResourceExhausted),
    ):
        client.explain(np.zeros((64, 64, 3), np.uint8), model="shapes-classifier")


def test_tls_settings(tmp_path: Path) -> None:
    with pytest.raises(camserve.InvalidArgument, match="root certificates"):
        camserve.Client("127.0.0.1:1", tls=tmp_path / "missing.pem")
    # True (system roots) and PEM bytes build a secure channel without contacting anyone
    camserve.Client("127.0.0.1:1", tls=True).close()
    camserve.Client("127.0.0.1:1", tls=b"-----BEGIN CERTIFICATE-----\n").close()


def test_large_request_dropped_by_the_server_is_resource_exhausted(
    fake: FakeServer, client_kwargs: dict[str, Any]
) -> None:
    # grpc-java (TorchServe) resets the stream of a message over max_request_size: grpcio sees CANCELLED
    fake.abort_code = grpc.StatusCode.CANCELLED
    with camserve.Client(fake.address, **client_kwargs) as client:
        with pytest.raises(camserve.ResourceExhausted, match="max_request_size") as info:
            client.explain(np.zeros((1200, 1200, 3), np.uint8), model="shapes-classifier")
        assert info.value.code == "CANCELLED"
        with pytest.raises(camserve.Internal):  # a small request cancelled is not about its size
            client.explain(np.zeros((8, 8, 3), np.uint8), model="shapes-classifier")


def test_cancelled_after_the_deadline_is_deadline_exceeded() -> None:
    # with a tiny deadline, TorchServe may reset the stream (CANCELLED) before grpcio reports DEADLINE_EXCEEDED
    state = CallState(1.0, RetryPolicy(retries=0, initial=0.1, maximum=1.0), TokenSource(environ={}), random.Random())
    cancelled = camserve.Internal("Stream removed", code="CANCELLED")
    assert type(state.final(cancelled)) is camserve.Internal  # time left: not about the deadline
    state.deadline = state.started  # the deadline is spent
    error = state.final(cancelled)
    assert isinstance(error, camserve.DeadlineExceeded) and error.code == "CANCELLED"
    assert "pass a larger timeout=" in error.message
