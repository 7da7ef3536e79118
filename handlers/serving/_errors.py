"""The one place that turns any exception met while serving into the typed error answered in band.

Typed errors (:class:`~handlers.engine.errors.CamserveError`) are reported as they are; running out of memory is
``RESOURCE_EXHAUSTED``; anything else is a generic ``INTERNAL`` whose details go to the worker log only. A sticky
CUDA error also ends the worker (:func:`serving_error`). REST JSON answers map the code to an HTTP status here too.
"""

from __future__ import annotations

import logging
from typing import Final

import torch

from handlers.engine.errors import CamserveError, InternalError, ResourceExhaustedError, UnavailableError
from handlers.serving._health import exit_if_sticky_cuda_error

__all__ = ["http_status", "serving_error", "to_camserve_error"]

_log = logging.getLogger(__name__)

_HTTP_STATUS: Final[dict[str, int]] = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "INTERNAL": 500,
}


def to_camserve_error(exc: BaseException) -> CamserveError:
    """The typed error to report for ``exc``: itself if typed, else a generic ``INTERNAL`` (details are logged)."""
    if isinstance(exc, CamserveError):
        return exc
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return ResourceExhaustedError("the server ran out of memory for this request")
    _log.error("internal error while serving a request", exc_info=(type(exc), exc, exc.__traceback__))
    return InternalError("internal server error; the details are in the server log")


def http_status(code: str) -> int:
    """HTTP status for a gRPC code name (REST JSON answers only; gRPC answers are always OK with in-band errors)."""
    return _HTTP_STATUS.get(code, 500)


def serving_error(exc: BaseException) -> CamserveError:
    """The in-band error for an exception met while serving; exits the worker first on a sticky CUDA error."""
    if exit_if_sticky_cuda_error(exc):
        return UnavailableError("the worker's GPU failed and the worker is restarting; retry the request")
    return to_camserve_error(exc)
