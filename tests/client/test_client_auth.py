"""Keys: where they come from, the key file TorchServe writes (and rewrites on restart), and how they are sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import camserve
import pytest
from camserve._auth import TokenSource
from conftest import FakeServer


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
