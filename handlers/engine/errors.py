"""The one typed error hierarchy of camserve's server side.

Every error a caller can cause or meet derives from :class:`CamserveError` and carries a gRPC status code *name*
(a plain string, so the engine needs no gRPC import). The codec turns any of them into an in-band ``Error`` message;
the client SDK maps the same names back to its own exception classes. Anything else that escapes is a bug and is
reported as ``INTERNAL`` without its details.
"""

from __future__ import annotations

__all__ = [
    "CamserveError",
    "DeadlineExceededError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "UnavailableError",
]


class CamserveError(Exception):
    """Base class. ``code`` is a gRPC status code name; ``field`` names the request field at fault, if any."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgumentError(CamserveError, ValueError):
    """The request is malformed or asks for something impossible (bad image, unknown method, bad region)."""

    code = "INVALID_ARGUMENT"


class NotFoundError(CamserveError, LookupError):
    """A named thing does not exist (layer, class name, model)."""

    code = "NOT_FOUND"


class ResourceExhaustedError(CamserveError):
    """The request is too large (images, pixels, response size) or the device ran out of memory."""

    code = "RESOURCE_EXHAUSTED"


class UnavailableError(CamserveError):
    """Transient: the worker cannot serve now (e.g. a sticky CUDA error); retrying elsewhere may succeed."""

    code = "UNAVAILABLE"


class DeadlineExceededError(CamserveError):
    """The caller's deadline passed before the work was done (the work is then not started at all)."""

    code = "DEADLINE_EXCEEDED"


class InternalError(CamserveError):
    """A bug on our side. The message shown to callers is generic; details go to the server log."""

    code = "INTERNAL"
