"""The engine's device variants side by side (``engine_bench.py --sections device``): float32 NCHW, channels_last,
autocast and both, each as a ratio to the same plain float32 NCHW forward, beside the forward in each variant.

It answers "does channels_last / amp help here?" in one run: a variant's ratio below the ``engine`` ratio is a
speed-up on this device. The forward rows separate the model's own gain from the engine's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from functools import partial

import torch
import torchvision
from _device import DeviceOptions  # beside this file
from _timing import Contestant, measure
from torch import Tensor, nn

from handlers.engine import Explainer
from handlers.engine._device import autocast

__all__ = ["VARIANTS", "variant_rows"]

#: Label -> (amp, channels_last).
VARIANTS: dict[str, tuple[bool, bool]] = {
    "": (False, False),
    " channels_last": (False, True),
    " amp": (True, False),
    " amp+channels_last": (True, True),
}
Row = tuple[int, str, float, dict[str, float]]


def _forward(model: nn.Module, x: Tensor, device: torch.device, amp: bool) -> object:
    with torch.inference_mode(), autocast(device, amp):
        return model(x)


def variant_rows(
    name: str,
    batches: list[int],
    size: int,
    rounds: int,
    warmup: int,
    works: dict[str, tuple[str, ...]],
    dev: DeviceOptions,
    sync: Callable[[], None] | None,
) -> Iterator[Row]:
    """``(batch, work, forward seconds, ratios)`` per batch: a ``forward`` row, then one row per work."""
    torch.manual_seed(0)
    nchw = getattr(torchvision.models, name)(weights=None).eval().requires_grad_(False).to(dev.device)
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    engines = {
        label: Explainer(nhwc if cl else nchw, layers="layer4", amp=amp, channels_last=cl)
        for label, (amp, cl) in VARIANTS.items()
    }
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)).to(dev.device)
        x_nhwc = x.contiguous(memory_format=torch.channels_last)
        plain = partial(_forward, nchw, x, dev.device, False)
        forwards: dict[str, Contestant] = {
            f"forward{label}": partial(_forward, nhwc if cl else nchw, x_nhwc if cl else x, dev.device, amp)
            for label, (amp, cl) in VARIANTS.items()
            if label
        }
        fwd_s, ratios = measure(plain, forwards, rounds, warmup, sync)
        yield batch, "forward", fwd_s, ratios
        for work, methods in works.items():
            contestants: dict[str, Contestant] = {
                f"engine{label}": partial(engines[label].explain, x, methods) for label in VARIANTS
            }
            if dev.device.type == "cuda":  # the served path: host images, one pinned non-blocking copy
                contestants["engine host images"] = partial(engines[""].explain, x.cpu(), methods)
            fwd_s, ratios = measure(plain, contestants, rounds, warmup, sync)
            yield batch, work, fwd_s, ratios
