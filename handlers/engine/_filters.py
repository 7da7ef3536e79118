"""Filters: a model's convolution kernels as pictures (first layer) or per-channel summaries (deeper layers).

The first convolution of an image model sees colours, so each of its kernels ``[3, kh, kw]`` is shown as an RGB
tile: divided by its own largest |weight| and mapped to [0, 1], 0.5 (grey) being a zero weight, as in Krizhevsky
et al.'s famous figure. Deeper kernels have tens or hundreds of input channels and cannot be looked at directly;
they are summarised per output channel: the spatial profile ``||w[o, :, y, x]||_2`` (which positions of the window
the channel weighs), the channel's norm ``||w[o]||_2`` and its connections ``||w[o, i]||_2`` to every input channel.
Weights are read, never changed; nothing runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from handlers.engine._layers import resolve_layers
from handlers.engine.errors import InvalidArgumentError

__all__ = ["FilterView", "conv_layers", "filters"]


@dataclass(frozen=True, eq=False)
class FilterView:
    """The kernels of one convolution, in a form a person can look at.

    Attributes:
        layer: The convolution's dotted name.
        in_channels: Input channels per group (the kernels' second dimension).
        out_channels: Output channels (kernels), all of them, whatever ``channels`` kept.
        groups: The convolution's groups (``out_channels`` for a depthwise convolution).
        kernel_size: ``(kh, kw)``.
        rgb: Whether ``tiles`` are RGB pictures (a layer whose kernels have 3 input channels).
        channels: The output channels shown, in index order.
        tiles: ``rgb``: ``[N, 3, kh, kw]`` in [0, 1], 0.5 = zero weight, each kernel scaled by its own max |w|;
            otherwise the spatial profiles ``[N, kh, kw]`` = ``||w[o, :, y, x]||_2`` (float32, CPU).
        norms: ``[N]``: ``||w[o]||_2`` of each shown kernel.
        connections: ``[N, in_channels]``: ``||w[o, i]||_2``, how strongly each kernel reads each input channel.
    """

    layer: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, int]
    rgb: bool
    channels: tuple[int, ...]
    tiles: Tensor
    norms: Tensor
    connections: Tensor


def conv_layers(model: nn.Module) -> tuple[str, ...]:
    """Dotted names of the model's 2-D convolutions, in module order (the first one is the default)."""
    return tuple(name for name, m in model.named_modules() if name and isinstance(m, nn.Conv2d))


def _view(name: str, conv: nn.Conv2d, max_channels: int | None) -> FilterView:
    w = conv.weight.detach().to("cpu", torch.float32)
    out_channels, in_channels, kh, kw = (int(d) for d in w.shape)
    count = out_channels if max_channels is None else min(max_channels, out_channels)
    w = w[:count]
    flat = w.reshape(count, -1)
    rgb = in_channels == 3
    if rgb:
        peak = flat.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny)
        tiles = (w / peak[:, None, None, None] + 1.0) / 2.0
    else:
        tiles = w.square().sum(dim=1).sqrt()
    return FilterView(
        layer=name,
        in_channels=in_channels,
        out_channels=out_channels,
        groups=int(conv.groups),
        kernel_size=(kh, kw),
        rgb=rgb,
        channels=tuple(range(count)),
        tiles=tiles.contiguous(),
        norms=flat.norm(dim=1),
        connections=w.square().sum(dim=(2, 3)).sqrt(),
    )


def filters(model: nn.Module, layers: Sequence[str] | None = None, max_channels: int | None = None) -> list[FilterView]:
    """The kernels of the named convolutions (default: the first one), one :class:`FilterView` each.

    Args:
        model: The model (not run, not changed).
        layers: Dotted names of ``nn.Conv2d`` modules; ``None`` = the first convolution.
        max_channels: Show at most this many output channels per layer (the first ones); ``None`` = all.

    Raises:
        InvalidArgumentError: The model has no convolution, a named layer is not an ``nn.Conv2d`` (field
            ``layers``), ``layers`` is empty, or ``max_channels`` is not a positive int (``max_channels``).
        NotFoundError: A name the model does not have.
    """
    if max_channels is not None and (
        isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1
    ):
        raise InvalidArgumentError(f"max_channels must be an int >= 1, got {max_channels!r}", field="max_channels")
    if layers is None:
        convs = conv_layers(model)
        if not convs:
            raise InvalidArgumentError("the model has no 2-D convolution", field="layers")
        names: tuple[str, ...] = convs[:1]
    else:
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        if not names:
            raise InvalidArgumentError("layers is empty; pass None for the first convolution", field="layers")
    out = []
    for i, (name, module) in enumerate(resolve_layers(model, names).items()):
        if not isinstance(module, nn.Conv2d):
            raise InvalidArgumentError(
                f"layer {name!r} is a {type(module).__name__}, not a Conv2d; its filters cannot be shown",
                field=f"layers[{i}]",
            )
        out.append(_view(name, module, max_channels))
    return out
