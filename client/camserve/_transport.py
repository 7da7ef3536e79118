"""What the sync and asyncio clients share: channel settings, metadata, the deadline and the retry policy.

Addresses are gRPC targets: ``host:port``, or a name-resolver target for a replicated service, e.g.
``dns:///camserve-headless.ns.svc:7070`` (every pod behind a headless Service) or the static list
``ipv4:10.0.0.1:7070,10.0.0.2:7070``. ``load_balancing="round_robin"`` spreads calls over every address the
target resolves to (gRPC's own policy, through the channel's service config); grpcio's default, ``pick_first``,
sends every call to one of them.

Retry policy (one place, used by both clients): only :class:`~camserve.errors.Unavailable` is retried, i.e. the
server could not be reached or is restarting. Rejected input, missing models, auth failures, internal errors and
deadlines are never retried. Delays grow exponentially with "full jitter" (a uniform draw below the exponential
bound, so many clients restarting together do not hammer the server in lockstep) and never run past the call's
deadline: the deadline bounds the whole call, retries included.

A key that came from TorchServe's key file is re-read once when the server refuses it, since a restarted server
writes new keys; that one extra attempt is not counted as a retry.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from camserve._auth import TokenSource
from camserve.errors import (
    CamserveError,
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

DEFAULT_ADDRESS = "127.0.0.1:7070"
ADDRESS_ENV = "CAMSERVE_ADDRESS"
#: Largest message either way. TorchServe's max_response_size defaults to 6,553,500 B and servers may raise it;
#: grpcio's own receive default (4 MiB) is below that, so real responses would fail without this.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

TlsLike = bool | bytes | str | os.PathLike[str]
#: Requests at least this large that the server drops mid-stream (CANCELLED) were over its size limit: grpc-java
#: resets the stream when a message exceeds max_request_size (TorchServe's default is 6,553,500 B).
LARGE_REQUEST_BYTES = 4 * 1024 * 1024
#: gRPC's load-balancing policies a client may choose (``load_balancing=``).
LOAD_BALANCING_POLICIES = ("pick_first", "round_robin")
#: Target schemes whose address part is a comma-separated list of ``host:port``.
LIST_SCHEMES = ("ipv4:", "ipv6:")


def resolve_address(address: str | None) -> str:
    """The inference address: the argument, else ``$CAMSERVE_ADDRESS``, else 127.0.0.1:7070."""
    value = (address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS).strip()
    value = value.removeprefix("grpc://")
    if not value or value.startswith(":"):
        raise InvalidArgument(f"address must be host:port, got {value!r}", field="address")
    return value


def management_address_for(address: str) -> str:
    """TorchServe's convention: the gRPC management port is the inference port + 1 (7070 -> 7071).

    For a static list (``ipv4:a:7070,b:7070``) every address moves; ``dns:///host:7070`` becomes
    ``dns:///host:7071``.
    """

    def next_port(one: str) -> str:
        host, sep, port = one.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(
                f"cannot derive the management address from {address!r}: pass management_address=",
                field="address",
            )
        return f"{host}:{int(port) + 1}"

    for scheme in LIST_SCHEMES:
        if address.startswith(scheme):
            return scheme + ",".join(next_port(one) for one in address[len(scheme) :].split(","))
    return next_port(address)


def load_balancing_options(policy: str | None) -> list[tuple[str, object]]:
    """The channel argument selecting gRPC's load-balancing ``policy`` (None: grpcio's default, pick_first).

    Raises:
        InvalidArgument: ``policy`` is not one of :data:`LOAD_BALANCING_POLICIES`.
    """
    if policy is None:
        return []
    if policy not in LOAD_BALANCING_POLICIES:
        raise InvalidArgument(
            f"load_balancing must be one of {', '.join(LOAD_BALANCING_POLICIES)}, got {policy!r}",
            field="load_balancing",
        )
    return [("grpc.service_config", json.dumps({"loadBalancingConfig": [{policy: {}}]}))]


def channel_options(max_message_bytes: int, extra: Sequence[tuple[str, object]] = ()) -> list[tuple[str, object]]:
    """Channel arguments: message size limits both ways, no gRPC-level retries (ours are explicit)."""
    if max_message_bytes < 1:
        raise InvalidArgument("max_message_bytes must be positive", field="max_message_bytes")
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 0),
        *extra,
    ]


def channel_credentials(tls: TlsLike) -> grpc.ChannelCredentials | None:
    """None for plaintext; else TLS credentials with the system roots (``True``) or the given PEM roots.

    ``tls`` may be the PEM bytes themselves or a path to a PEM file.
    """
    if tls is False or tls is None:
        return None
    if tls is True:
        return grpc.ssl_channel_credentials()
    if isinstance(tls, bytes):
        return grpc.ssl_channel_credentials(root_certificates=tls)
    path = Path(tls).expanduser()
    try:
        return grpc.ssl_channel_credentials(root_certificates=path.read_bytes())
    except OSError as exc:
        raise InvalidArgument(f"cannot read root certificates {path}: {exc.strerror or exc}", field="tls") from None


def metadata(token: str | None, headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The call's metadata: ``authorization: Bearer <key>`` plus the caller's headers (lower-cased keys)."""
    out: list[tuple[str, str]] = []
    if token:
        out.append(("authorization", f"Bearer {token}"))
    for key, value in (headers or {}).items():
        name = key.lower()
        if name == "authorization" and token:
            continue  # the explicit token wins over a header copy of it
        out.append((name, str(value)))
    return tuple(out)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, for transport failures only.

    Attributes:
        retries: Extra attempts after the first (0 = no retries).
        initial: Upper bound of the first delay, seconds.
        maximum: Cap on any delay's upper bound, seconds.
        multiplier: Growth of the bound per attempt.
    """

    retries: int = 3
    initial: float = 0.2
    maximum: float = 5.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise InvalidArgument("retries must be >= 0", field="retries")
        if self.initial < 0 or self.maximum < 0:
            raise InvalidArgument("backoff must be >= 0", field="backoff")

    def bound(self, attempt: int) -> float:
        """Upper bound of the delay before retry number ``attempt`` (0-based)."""
        return float(min(self.maximum, self.initial * self.multiplier**attempt))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """A jittered delay in ``[0, bound(attempt)]``."""
        return rng.uniform(0.0, self.bound(attempt))


class CallState:
    """Tracks one logical call across attempts and decides what follows each failure (shared by both clients)."""

    def __init__(
        self,
        timeout: float,
        policy: RetryPolicy,
        tokens: TokenSource,
        rng: random.Random,
        kind: str = "inference",
        request_bytes: int = 0,
    ) -> None:
        if not timeout or timeout <= 0:
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}", field="timeout")
        self.timeout = float(timeout)
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout
        self.policy = policy
        self.tokens = tokens
        self.rng = rng
        self.attempts = 0
        self.retries = 0
        self.refreshed = False
        self.kind = kind
        self.request_bytes = request_bytes

    def remaining(self) -> float:
        """Seconds left for the next attempt; raises DeadlineExceeded when none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(self._deadline_message())
        self.attempts += 1
        return left

    def _deadline_message(self, message: str = "no answer in time") -> str:
        tries = f", {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{message} (deadline {self.timeout:g} s{tries}; pass a larger timeout= if the work is big)"

    def elapsed_ms(self) -> float:
        """Milliseconds since the call started."""
        return (time.monotonic() - self.started) * 1000.0

    def next_step(self, error: CamserveError) -> float | None:
        """After a failed attempt: seconds to wait before trying again, or None to give up (raise ``error``)."""
        if isinstance(error, Unauthenticated) and not self.refreshed:
            self.refreshed = True
            return 0.0 if self.tokens.refresh() else None
        if not isinstance(error, Unavailable) or self.retries >= self.policy.retries:
            return None
        delay = self.policy.delay(self.retries, self.rng)
        if time.monotonic() + delay >= self.deadline:
            return None
        self.retries += 1
        return delay

    def final(self, error: CamserveError) -> CamserveError:
        """The error to raise after giving up, with the attempts noted and hints for common causes."""
        if isinstance(error, DeadlineExceeded):
            return DeadlineExceeded(self._deadline_message(error.message), code=error.code, field=error.field)
        if isinstance(error, Unavailable) and self.attempts > 1:
            return Unavailable(f"{error.message} (after {self.attempts} attempts)", code=error.code, field=error.field)
        if error.code == "CANCELLED" and time.monotonic() >= self.deadline:
            # The server (grpc-java) may reset the stream of a call whose deadline it saw run out before grpcio
            # did: the caller's deadline is what ended it.
            return DeadlineExceeded(self._deadline_message(), code=error.code, field=error.field)
        if error.code == "CANCELLED" and self.request_bytes >= LARGE_REQUEST_BYTES:
            return ResourceExhausted(
                f"the server dropped the request ({self.request_bytes:,} bytes; {error.message}): it is probably "
                "over the server's max_request_size; send fewer or smaller images (encoded files are much smaller "
                "than raw pixel arrays)",
                code=error.code,
            )
        if isinstance(error, Unauthenticated):
            return Unauthenticated(
                f"{error.message} ({self.tokens.describe(self.kind)})",
                code=error.code,
                field=error.field,
            )
        return error
