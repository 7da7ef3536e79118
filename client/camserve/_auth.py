"""Where the client's keys come from: an argument, an environment variable, or TorchServe's key file.

TorchServe (token authorization on, the default) writes ``key_file.json`` into its working directory at start::

    {"management": {"key": "...", "expiration time": "..."},
     "inference": {"key": "...", "expiration time": "..."},
     "API": {"key": "..."}}

Inference calls need the inference key; management calls (``models()``) need the management key. Keys change on
every server start and when renewed, so a key that came from a file is re-read whenever the file changes, and once
more when the server refuses it (the server may have restarted and written new keys).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from camserve.errors import Unauthenticated

TOKEN_ENV = "CAMSERVE_TOKEN"
TOKEN_FILE_ENV = "CAMSERVE_TOKEN_FILE"
MANAGEMENT_TOKEN_ENV = "CAMSERVE_MANAGEMENT_TOKEN"


@dataclass(frozen=True)
class _Keys:
    inference: str | None
    management: str | None


def _clean(token: str | None) -> str | None:
    """Strips whitespace and an optional ``Bearer`` prefix; empty means no token."""
    if token is None:
        return None
    token = token.strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    return token or None


class _KeyFileNotReady(Unauthenticated):
    """The key file is not there, or not completely written: TorchServe writes it when it starts (an instant when it
    is empty or half-written JSON) and removes it when it stops."""


def _missing_message(path: Path) -> str:
    return (
        f"token file {path} does not exist (TorchServe writes key_file.json into its working directory when it starts)"
    )


def _parse_key_file(path: Path) -> _Keys:
    """Reads TorchServe's key_file.json (or a plain-text file holding one key for both uses)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _KeyFileNotReady(_missing_message(path)) from None
    except OSError as exc:
        raise Unauthenticated(f"cannot read token file {path}: {exc.strerror or exc}") from None
    if not text.lstrip().startswith("{"):
        key = _clean(text)
        if key is None:
            raise _KeyFileNotReady(f"token file {path} is empty")
        return _Keys(inference=key, management=key)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _KeyFileNotReady(f"token file {path} is not valid JSON: {exc.msg}") from None

    def key_of(section: str) -> str | None:
        entry = data.get(section) if isinstance(data, dict) else None
        value = entry.get("key") if isinstance(entry, dict) else None
        return _clean(value) if isinstance(value, str) else None

    keys = _Keys(inference=key_of("inference"), management=key_of("management"))
    if keys.inference is None and keys.management is None:
        raise Unauthenticated(f'token file {path} has neither an "inference" nor a "management" key')
    return keys


class TokenSource:
    """Resolves the inference and management keys, in this order of precedence.

    Inference key: ``token`` argument, ``token_file`` argument, ``$CAMSERVE_TOKEN``, ``$CAMSERVE_TOKEN_FILE``.
    Management key: ``management_token`` argument, ``$CAMSERVE_MANAGEMENT_TOKEN``, then the management key of the
    token file (argument first, then environment). No source at all means calls go without a token (for servers
    started with token authorization off).
    """

    def __init__(
        self,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        management_token: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._token = _clean(token)
        self._management_token = _clean(management_token) or _clean(env.get(MANAGEMENT_TOKEN_ENV))
        self._env_token = _clean(env.get(TOKEN_ENV))
        file_arg = token_file if token_file is not None else (env.get(TOKEN_FILE_ENV) or None)
        self._file = Path(file_arg).expanduser() if file_arg is not None else None
        self._file_from_env = token_file is None and self._file is not None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._keys: _Keys | None = None

    @property
    def file(self) -> Path | None:
        """The key file in use, if any."""
        return self._file

    def describe(self, kind: str = "inference") -> str:
        """Says where the ``kind`` ("inference" or "management") key comes from, for error messages."""
        if kind == "management":
            if self._management_token:
                return f"management key from the management_token argument or ${MANAGEMENT_TOKEN_ENV}"
        elif self._token:
            return "inference key from the token argument"
        elif self._env_token and (self._file is None or self._file_from_env):
            return f"inference key from ${TOKEN_ENV}"
        if self._file is None:
            return f"no {kind} key was given"
        try:
            _parse_key_file(self._file)
        except Unauthenticated as exc:  # say what is wrong with the file: the server's refusal does not
            return exc.message
        return f"{kind} key from token file {self._file}"

    def _file_keys(self, force: bool = False) -> _Keys | None:
        if self._file is None:
            return None
        with self._lock:
            try:
                st = self._file.stat()
                stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
            except OSError:
                stamp = None
            if not force and self._keys is not None and stamp == self._stamp:
                return self._keys
            try:
                keys = _parse_key_file(self._file)
            except Unauthenticated as exc:
                if self._keys is not None and not force:
                    # The file vanished or is half-written: the server is restarting. Keep the last keys; the
                    # call then fails as UNAVAILABLE (retried) and the new file is read once it is there.
                    return self._keys
                if isinstance(exc, _KeyFileNotReady) and not force:
                    # Never read, and not there or still being written: the server is starting. Call without a
                    # key: a server that is down answers UNAVAILABLE (retried); one that is up refuses the call,
                    # and the refusal re-reads the file, which it has written by then (if it still cannot be
                    # read, the refusal is raised, saying what is wrong with the file).
                    return None
                raise
            self._keys, self._stamp = keys, stamp
            return keys

    def inference_key(self) -> str | None:
        """The key for inference calls (Ping, Predictions), or None to send no token."""
        if self._token:
            return self._token
        if self._file is not None and not self._file_from_env:
            return self._require(self._file_keys(), "inference")
        if self._env_token:
            return self._env_token
        if self._file is not None:
            return self._require(self._file_keys(), "inference")
        return None

    def management_key(self) -> str | None:
        """The key for management calls (ListModels), or None to send no token."""
        if self._management_token:
            return self._management_token
        if self._file is not None:
            return self._require(self._file_keys(), "management")
        return None

    def _require(self, keys: _Keys | None, kind: str) -> str | None:
        if keys is None:  # the key file is not there yet
            return None
        key = getattr(keys, kind, None)
        if not key:
            raise Unauthenticated(f'token file {self._file} has no "{kind}" key')
        return str(key)

    def refresh(self) -> bool:
        """Re-reads the key file after the server refused a key; True when a key changed (worth one more try)."""
        if self._file is None:
            return False
        before = self._keys
        try:
            after = self._file_keys(force=True)
        except Unauthenticated:
            return False
        return after != before
