"""Deadlines, retries (transport failures only), tokens and metadata, message sizes."""

from __future__ import annotations

import json
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
from camserve._transport import RetryPolicy, management_address_for, resolve_address
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


# ---- tokens ----


def key_file(path: Path, inference: str, management: str) -> Path:
    path.write_text(
        json.dumps(
            {
                "management": {"key": management, "expiration time": "2099-01-01T00:00:00Z"},
                "inference": {"key": inference, "expiration time": "2099-01-01T00:00:00Z"},
                "API": {"key": "api-key"},
            },
            indent=2,
        )
    )
    return path


def test_token_sources_precedence(tmp_path: Path) -> None:
    f = key_file(tmp_path / "key_file.json", "file-inf", "file-man")
    g = key_file(tmp_path / "other.json", "env-file-inf", "env-file-man")
    env = {"CAMSERVE_TOKEN": "env-tok", "CAMSERVE_TOKEN_FILE": str(g)}
    assert TokenSource(token="arg", token_file=f, environ=env).inference_key() == "arg"
    assert TokenSource(token_file=f, environ=env).inference_key() == "file-inf"
    assert TokenSource(environ=env).inference_key() == "env-tok"
    assert TokenSource(environ={"CAMSERVE_TOKEN_FILE": str(g)}).inference_key() == "env-file-inf"
    assert TokenSource(environ={}).inference_key() is None
    # management key: argument, env, then the file's management key
    assert TokenSource(token_file=f, environ=env).management_key() == "file-man"
    assert TokenSource(environ=env).management_key() == "env-file-man"
    assert TokenSource(token_file=f, management_token="m", environ={}).management_key() == "m"
    assert TokenSource(token_file=f, environ={"CAMSERVE_MANAGEMENT_TOKEN": "em"}).management_key() == "em"
    assert TokenSource(token="only", environ={}).management_key() is None


def test_token_cleaning_and_plain_text_file(tmp_path: Path) -> None:
    assert TokenSource(token="  Bearer abc  ", environ={}).inference_key() == "abc"
    plain = tmp_path / "token.txt"
    plain.write_text("xyz\n")
    source = TokenSource(token_file=plain, environ={})
    assert source.inference_key() == source.management_key() == "xyz"


def test_bad_token_file_raises_unauthenticated(tmp_path: Path) -> None:
    path = tmp_path / "key_file.json"
    path.write_text('{"API": {"key": "a"}}')
    with pytest.raises(camserve.Unauthenticated, match="neither"):
        TokenSource(token_file=path, environ={}).inference_key()


@pytest.mark.parametrize(("content", "message"), [("{not json", "not valid JSON"), ("", "empty"), ("  \n", "empty")])
def test_token_file_being_written_means_no_key_yet(tmp_path: Path, content: str, message: str) -> None:
    # TorchServe writes key_file.json as it starts: read at that instant, it is empty or half-written JSON
    path = tmp_path / "key_file.json"
    path.write_text(content)
    source = TokenSource(token_file=path, environ={})
    assert source.inference_key() is None and source.management_key() is None
    assert message in source.describe()  # what a refusal of the keyless call reports
    assert not source.refresh()
    key_file(path, "i", "m")
    assert source.refresh() and source.inference_key() == "i"


def test_unreadable_token_file_is_named_in_the_refusal(
    fake: FakeServer, client_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    fake.token = "right"
    path = tmp_path / "key_file.json"
    path.write_text("")
    with (
        camserve.Client(fake.address, token_file=path, **client_kwargs) as client,
        pytest.raises(camserve.Unauthenticated, match="is empty"),
    ):
        client.ping()
    key_file(path, "right", "m")  # written by the time the refusal re-reads it: the call goes through
    with camserve.Client(fake.address, token_file=path, **client_kwargs) as client:
        assert client.ping() == "Healthy"


def test_missing_token_file_means_no_key_yet(tmp_path: Path) -> None:
    source = TokenSource(token_file=tmp_path / "key_file.json", environ={})
    assert source.inference_key() is None and source.management_key() is None
    assert "does not exist" in source.describe() and "does not exist" in source.describe("management")
    assert not source.refresh()
    key_file(tmp_path / "key_file.json", "i", "m")
    assert source.inference_key() == "i"
    assert source.describe() == f"inference key from token file {tmp_path / 'key_file.json'}"


def test_token_file_without_management_key(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text('{"inference": {"key": "i"}}')
    with pytest.raises(camserve.Unauthenticated, match='no "management" key'):
        TokenSource(token_file=path, environ={}).management_key()


def test_token_is_sent_as_bearer_metadata(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.token = "sekret"
    with camserve.Client(fake.address, token="sekret", headers={"x-team": "vision"}, **client_kwargs) as client:
        client.ping(headers={"x-call": "1"})
    assert fake.metadata[-1]["authorization"] == "Bearer sekret"
    assert fake.metadata[-1]["x-team"] == "vision" and fake.metadata[-1]["x-call"] == "1"


def test_wrong_token_is_unauthenticated_and_names_its_source(fake: FakeServer, client_kwargs: dict[str, Any]) -> None:
    fake.token = "right"
    with (
        camserve.Client(fake.address, token="wrong", **client_kwargs) as client,
        pytest.raises(camserve.Unauthenticated) as info,
    ):
        client.explain(b"a", model="shapes-classifier")
    assert info.value.code == "PERMISSION_DENIED"
    assert "Token Authorization failed" in info.value.message and "token argument" in info.value.message
    assert fake.calls == 1


def test_env_token_and_file_are_used(
    fake: FakeServer, client_kwargs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.token, fake.management_token = "inf", "man"
    monkeypatch.setenv("CAMSERVE_TOKEN_FILE", str(key_file(tmp_path / "key_file.json", "inf", "man")))
    monkeypatch.setenv("CAMSERVE_ADDRESS", fake.address)
    with camserve.Client(**client_kwargs) as client:
        assert client.ping() == "Healthy"
        assert [m.name for m in client.models()] == fake.models
    monkeypatch.setenv("CAMSERVE_TOKEN", "inf")
    monkeypatch.delenv("CAMSERVE_TOKEN_FILE")
    with camserve.Client(**client_kwargs) as client:
        assert client.ping() == "Healthy"
        with pytest.raises(camserve.Unauthenticated, match="management key"):
            client.models()


def test_key_file_is_reread_after_server_restart(
    fake: FakeServer, client_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    path = key_file(tmp_path / "key_file.json", "old", "old-m")
    fake.token = "old"
    with camserve.Client(fake.address, token_file=path, **client_kwargs) as client:
        assert client.ping() == "Healthy"
        # the server restarts with new keys; the client notices the changed file (mtime/size) or, failing
        # that, re-reads it once after the refusal
        fake.token = "new-key"
        key_file(path, "new-key", "new-m")
        assert client.ping() == "Healthy"
        assert fake.metadata[-1]["authorization"] == "Bearer new-key"


def test_refused_key_triggers_one_forced_reread(
    fake: FakeServer, client_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    path = key_file(tmp_path / "key_file.json", "k1", "m1")
    fake.token = "k1"
    with camserve.Client(fake.address, token_file=path, **client_kwargs) as client:
        client.ping()
        source = client.tokens
        # a key change the stat check cannot see (same mtime and size): the cached key goes stale
        source._keys = source._keys.__class__("stale", "m1")
        fake.calls = 0
        assert client.ping() == "Healthy"
        assert fake.calls == 2  # refused with the stale key, then accepted after the re-read
        fake.token = "k-unknown"
        fake.calls = 0
        with pytest.raises(camserve.Unauthenticated):
            client.ping()
        assert fake.calls == 1  # file unchanged: no pointless second attempt


def test_token_file_missing_at_call_time(fake: FakeServer, client_kwargs: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "key_file.json"
    # A server without token auth does not care; the call goes without a key.
    with camserve.Client(fake.address, token_file=path, **client_kwargs) as client:
        assert client.ping() == "Healthy"
    assert "authorization" not in fake.metadata[-1]
    # A server with token auth refuses it; the refusal says the file is missing.
    fake.token = "k"
    with (
        camserve.Client(fake.address, token_file=path, **client_kwargs) as client,
        pytest.raises(camserve.Unauthenticated, match="does not exist"),
    ):
        client.ping()


def test_token_file_written_while_the_client_waits(
    fake: FakeServer, client_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    # A client started before the server: no key file yet. The server comes up and writes its keys; the refusal
    # of the key-less call makes the client read the file, and the call succeeds.
    path = tmp_path / "key_file.json"
    fake.token = "fresh"
    fake.on_call = lambda: None if path.exists() else key_file(path, "fresh", "m")  # written at the first call
    with camserve.Client(fake.address, token_file=path, **client_kwargs) as client:
        assert client.ping() == "Healthy"
    assert [m.get("authorization") for m in fake.metadata] == [None, "Bearer fresh"]


def test_tls_settings(tmp_path: Path) -> None:
    with pytest.raises(camserve.InvalidArgument, match="root certificates"):
        camserve.Client("127.0.0.1:1", tls=tmp_path / "missing.pem")
    # True (system roots) and PEM bytes build a secure channel without contacting anyone
    camserve.Client("127.0.0.1:1", tls=True).close()
    camserve.Client("127.0.0.1:1", tls=b"-----BEGIN CERTIFICATE-----\n").close()


def test_key_file_missing_during_restart_keeps_last_keys(
    fake: FakeServer, client_kwargs: dict[str, Any], tmp_path: Path
) -> None:
    path = key_file(tmp_path / "key_file.json", "k1", "m1")
    fake.token = "k1"
    with camserve.Client(fake.address, token_file=path, **client_kwargs) as client:
        assert client.ping() == "Healthy"
        path.unlink()  # TorchServe removes its keys when it stops
        assert client.ping() == "Healthy"  # the last keys are used while the file is gone
        fake.token = "k2"
        key_file(path, "k2", "m2")  # the restarted server's keys
        assert client.ping() == "Healthy"
        assert fake.metadata[-1]["authorization"] == "Bearer k2"


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
