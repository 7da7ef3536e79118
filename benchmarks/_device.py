"""The benchmarks' device options: ``--device``, ``--amp``, ``--channels-last``, and placing models and inputs by them.

``--device cuda[:N]`` refuses to start when CUDA is not available (rather than silently measuring the CPU). On CUDA,
every timed call is bracketed by ``torch.cuda.synchronize`` (:func:`synchronizer`, used by ``_timing.measure``), so a
time covers the kernels a call queued, not only the queueing. ``--amp`` runs the engine with ``amp=True`` and the
plain forward it is compared with under the same autocast; ``--channels-last`` converts every model copy and input
to NHWC and runs the engine with ``channels_last=True``, so each ratio compares like with like.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from handlers.engine._device import autocast

__all__ = ["DeviceOptions", "add_device_arguments", "device_options", "synchronizer"]


@dataclass(frozen=True)
class DeviceOptions:
    """Where and how the benchmark runs."""

    device: torch.device
    amp: bool = False
    channels_last: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def engine_kwargs(self) -> dict[str, bool]:
        """The engine's constructor options for these settings."""
        return {"amp": self.amp, "channels_last": self.channels_last}

    def model(self, model: nn.Module) -> nn.Module:
        """``model`` on the device, in NHWC with ``--channels-last``."""
        return model.to(self.device).to(memory_format=self.memory_format)

    def input(self, x: Tensor) -> Tensor:
        """``x`` on the device in the model's memory format."""
        return x.to(self.device).contiguous(memory_format=self.memory_format)

    def forward_scope(self) -> contextlib.AbstractContextManager[object]:
        """The plain forward's autocast (the engine's own with ``--amp``, else nothing)."""
        return autocast(self.device, self.amp)

    def describe(self) -> str:
        """One line for the table header: the device (GPU name on CUDA) and the switches."""
        where = platform.processor() or platform.machine()
        if self.device.type == "cuda":
            where = torch.cuda.get_device_name(self.device)
        switches = [s for s, on in (("amp", self.amp), ("channels_last", self.channels_last)) if on]
        return f"{self.device} ({where}){', ' + '+'.join(switches) if switches else ''}"


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--amp``, ``--channels-last``."""
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]; refuses if CUDA is not available")
    parser.add_argument(
        "--amp", action="store_true", help="engine amp=True; the plain forward under the same torch.autocast"
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="models and inputs in NHWC; engine channels_last=True"
    )


def device_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> DeviceOptions:
    """The parsed device options; exits with a usage error for an unknown or unavailable device."""
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        parser.error(f"--device {args.device}: {exc}")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda[:N], got {args.device}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            parser.error(f"--device {args.device}: CUDA is not available on this machine (torch {torch.__version__})")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            parser.error(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
    return DeviceOptions(device, amp=args.amp, channels_last=args.channels_last)


def synchronizer(device: torch.device) -> Callable[[], None] | None:
    """What ``_timing.measure`` calls before starting and before stopping each clock: a CUDA synchronise, else
    nothing (CPU calls are synchronous)."""
    if device.type != "cuda":
        return None
    return lambda: torch.cuda.synchronize(device)
