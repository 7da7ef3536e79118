"""The one exception family of the camserve client, and the one place where errors are mapped onto it.

Every failure the SDK reports is a :class:`CamserveError`. The subclass says what kind of failure it was; the
instance keeps the server's message (``.message``), the status code name the server or transport used (``.code``,
e.g. ``"PERMISSION_DENIED"`` for an :class:`Unauthenticated`) and, for rejected input, the request field at fault
(``.field``, e.g. ``"images[2].encoded"``).

Errors reach the client two ways and both go through this module: as a gRPC status (:func:`from_rpc_error`), and in
band inside an ``ExplainResponse`` as an ``Error`` message carrying a gRPC code name (:func:`from_code`). The SDK's
own helpers (map arithmetic, geometry, pictures) raise the same family for arguments they cannot use.

Two classes also derive from the builtin a Python caller would expect from such a helper, so code written against
numpy- or dict-style errors keeps working: :class:`InvalidArgument` is a ``ValueError`` (a value, or a value of the
wrong type, was rejected) and :class:`NotFound` is a ``KeyError`` (a lookup found nothing, e.g.
``result.map("deconvnet")``). ``except camserve.CamserveError`` catches every one of them.
"""

from __future__ import annotations

import grpc

__all__ = [
    "CamserveError",
    "DeadlineExceeded",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_code",
    "from_rpc_error",
]


class CamserveError(Exception):
    """Base class of every error the camserve client raises.

    Attributes:
        message: The human-readable message, as the server (or the transport) wrote it.
        code: The gRPC status code name that caused this error, e.g. ``"INVALID_ARGUMENT"``.
        field: The request field at fault as a path (``"layers[0]"``), or ``""`` when not one field.
    """

    #: The code name an instance gets when none is given; subclasses set their own.
    default_code = "UNKNOWN"

    def __init__(self, message: str, *, code: str | None = None, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.field = field

    def __str__(self) -> str:
        where = f" (field: {self.field})" if self.field else ""
        return f"{self.message}{where} [{self.code}]"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r}, field={self.field!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions (needed across processes).
        return (_rebuild, (type(self), self.message, self.code, self.field))


def _rebuild(cls: type[CamserveError], message: str, code: str, field: str) -> CamserveError:
    return cls(message, code=code, field=field)


class InvalidArgument(CamserveError, ValueError):
    """The request was rejected as invalid: bad image, unknown method or layer, bad target or region, ...

    Also raised by the SDK's helpers for arguments they cannot use (a size of ``(0, 5)``, an unknown colormap, a
    1-D map), and a ``ValueError`` so numpy-style ``except ValueError`` keeps working. Never retried: sending the
    same request again gives the same answer.
    """

    default_code = "INVALID_ARGUMENT"


class NotFound(CamserveError, KeyError):
    """The model (or model version, or a called method) does not exist on the server.

    Also raised when a lookup in a result finds no single match (:meth:`camserve.ExplainResult.map`); a
    ``KeyError``, like a failed dict lookup.
    """

    default_code = "NOT_FOUND"


class Unauthenticated(CamserveError):
    """The server refused the token: missing, wrong, expired, or the wrong key (inference vs management).

    TorchServe answers bad tokens with PERMISSION_DENIED; both codes map here (``.code`` says which one came).
    """

    default_code = "UNAUTHENTICATED"


class ResourceExhausted(CamserveError):
    """The request or its response would exceed a server limit (image count, top-k, regions, message size)."""

    default_code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(CamserveError):
    """No answer within the call's deadline. Never retried: the time budget is spent."""

    default_code = "DEADLINE_EXCEEDED"


class Unavailable(CamserveError):
    """The server could not be reached or is restarting (connection refused or reset, worker restarting).

    The only kind of error the client retries (with exponential backoff and jitter); raised once retries are spent.
    """

    default_code = "UNAVAILABLE"


class Internal(CamserveError):
    """The server failed in a way that is not the caller's fault, or sent a response the client cannot read."""

    default_code = "INTERNAL"


# The one mapping from status code names onto the family. Codes not listed become Internal.
_BY_CODE: dict[str, type[CamserveError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "OUT_OF_RANGE": InvalidArgument,
    "FAILED_PRECONDITION": InvalidArgument,
    "ALREADY_EXISTS": InvalidArgument,
    "NOT_FOUND": NotFound,
    # A gRPC method the server does not offer, e.g. a management call sent to the inference port.
    "UNIMPLEMENTED": NotFound,
    "UNAUTHENTICATED": Unauthenticated,
    "PERMISSION_DENIED": Unauthenticated,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "UNAVAILABLE": Unavailable,
    "INTERNAL": Internal,
    "UNKNOWN": Internal,
    "DATA_LOSS": Internal,
    "ABORTED": Internal,
    "CANCELLED": Internal,
}

# TorchServe 0.12 answers a Predictions call for a model it does not know with INTERNAL and this message prefix
# (followed by the Java exception's class name); that is a NOT_FOUND for the caller.
_TORCHSERVE_MODEL_NOT_FOUND = "Model not found"


def from_code(code: str, message: str, field: str = "") -> CamserveError:
    """Builds the exception for a status code name (in-band ``Error.code`` or a gRPC status).

    Args:
        code: A gRPC status code name such as ``"INVALID_ARGUMENT"``; case-insensitive; unknown names give
            :class:`Internal`.
        message: The server's message, kept verbatim.
        field: The request field at fault, if any.

    Returns:
        An instance of the matching :class:`CamserveError` subclass (not raised).
    """
    name = (code or "UNKNOWN").strip().upper()
    cls = _BY_CODE.get(name, Internal)
    if cls is Internal and message.startswith(_TORCHSERVE_MODEL_NOT_FOUND):
        cls = NotFound
    return cls(message or name.replace("_", " ").lower(), code=name, field=field)


def from_rpc_error(error: grpc.RpcError) -> CamserveError:
    """Builds the exception for a failed gRPC call (sync or asyncio), keeping the server's message.

    Args:
        error: The ``grpc.RpcError`` (or ``grpc.aio.AioRpcError``) raised by a stub call.

    Returns:
        An instance of the matching :class:`CamserveError` subclass (not raised).
    """
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    status = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    name = status.name if isinstance(status, grpc.StatusCode) else "UNKNOWN"
    return from_code(name, details or str(error))
