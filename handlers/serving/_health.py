"""Worker health: which device a worker runs on, and ending a worker whose GPU can no longer be trusted.

After a sticky CUDA error (illegal memory access, device-side assert, ...) the CUDA context is corrupt and every later
call fails too, so the worker process exits and TorchServe starts a fresh one; everything else is answered in band.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Final

import torch

__all__ = [
    "STICKY_CUDA_ERRORS",
    "STICKY_EXIT_STATUS",
    "exit_if_sticky_cuda_error",
    "is_sticky_cuda_error",
    "select_device",
]

_log = logging.getLogger(__name__)

#: Messages of CUDA errors after which the CUDA context is corrupt and every later call fails too.
STICKY_CUDA_ERRORS: Final = (
    "an illegal memory access was encountered",
    "device-side assert triggered",
    "unspecified launch failure",
    "misaligned address",
    "an illegal instruction was encountered",
    "uncorrectable ECC error",
    "CUDA error: unknown error",
)
#: Exit status of a worker that leaves because of a sticky CUDA error (EX_SOFTWARE).
STICKY_EXIT_STATUS: Final = 70


def is_sticky_cuda_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a CUDA error that poisons the whole process."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if any(marker in text for marker in STICKY_CUDA_ERRORS):
            return True
        current = current.__cause__ or current.__context__
    return False


def exit_if_sticky_cuda_error(exc: BaseException, *, exit_fn: Callable[[int], Any] | None = None) -> bool:
    """Ends the worker process after a sticky CUDA error so TorchServe restarts it on a clean device.

    ``os._exit`` skips Python's cleanup on purpose: finalisers would touch the broken CUDA context and hang. The
    in-flight batch gets an error from TorchServe when the worker dies.

    Args:
        exc: The exception met while serving.
        exit_fn: The process exit; ``None`` = ``os._exit`` (looked up at call time so tests can replace it).

    Returns:
        False when ``exc`` is not sticky (nothing happens); True if ``exit_fn`` returned (tests only).
    """
    if not is_sticky_cuda_error(exc):
        return False
    _log.critical("sticky CUDA error, the worker exits so that TorchServe restarts it: %s", exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    (exit_fn or os._exit)(STICKY_EXIT_STATUS)
    return True


def select_device(gpu_id: object) -> torch.device:
    """``cuda:<gpu_id>`` when TorchServe assigned a GPU and CUDA is usable, else the CPU."""
    if gpu_id is None or not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        index = int(str(gpu_id))
    except ValueError:
        _log.warning("ignoring unusable gpu_id %r; running on the CPU", gpu_id)
        return torch.device("cpu")
    if not 0 <= index < torch.cuda.device_count():
        _log.warning("gpu_id %d is not a visible CUDA device; running on the CPU", index)
        return torch.device("cpu")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
