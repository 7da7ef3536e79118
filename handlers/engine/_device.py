"""Device placement of an explained batch: host-to-device copies that do not block, the memory format, autocast.

Everything the engine copies from the host to a CUDA device (the images, the target table, region masks, VAE
sampling noise) goes through :func:`to_device`: staged in pinned (page-locked) memory and copied with
``non_blocking=True``, so the host queues the copy and goes on queueing kernels instead of waiting for the device
to drain (a copy from pageable memory makes the host wait). The copy is ordered on the current stream before every
kernel that reads it; PyTorch's pinned-memory allocator keeps the staging buffer alive until the copy has run.

:func:`autocast` is the mixed-precision scope of the forward pass: ``float16`` on CUDA (tensor cores), ``bfloat16``
elsewhere (the CPU's autocast dtype, with float32's range, so it is exercised on machines without a GPU).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

__all__ = ["amp_dtype", "autocast", "to_device"]


def to_device(
    t: Tensor,
    device: torch.device,
    *,
    dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.preserve_format,
) -> Tensor:
    """``t`` on ``device`` in ``dtype`` and ``memory_format``; from host memory to CUDA through pinned memory,
    without blocking the host. Other moves (CPU to CPU, device to device) are plain ``Tensor.to`` calls.

    Args:
        t: Any tensor.
        device: Where it goes.
        dtype: Its dtype there (``None`` = keep); converted on the device, after the copy.
        memory_format: ``torch.channels_last`` for 4-d image batches the model runs in NHWC; ``preserve_format``
            keeps the layout.
    """
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory().to(device=device, non_blocking=True)
    else:
        t = t.to(device=device)
    if dtype is not None:
        t = t.to(dtype=dtype)
    if memory_format != torch.preserve_format:
        t = t.contiguous(memory_format=memory_format)
    return t


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype on ``device``: ``float16`` on CUDA, ``bfloat16`` on the CPU and elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[object]:
    """The forward pass's mixed-precision scope on ``device`` (:func:`amp_dtype`), or nothing when not ``enabled``."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))
