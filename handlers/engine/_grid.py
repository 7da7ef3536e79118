"""Turn a layer's output into a ``[..., C, h, w]`` spatial grid, whatever its layout.

CNN layers give channels-first maps ``[B, C, h, w]``; Swin-style models keep channels last ``[B, h, w, C]``; vision
transformers give tokens ``[B, N, C]`` with ``N = g_h * g_w`` patch tokens, possibly after one class token. The layout
is inferred from the per-sample shape and the input size (a grid must tile the input with about the same stride in
both directions), so the same CAM code serves every architecture, as pytorch-grad-cam's ``reshape_transform`` does
by hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from handlers.engine.errors import InvalidArgumentError

__all__ = ["GridLayout", "detect_layout", "layouts_of"]

# Largest relative difference between the vertical and horizontal strides of a plausible grid.
_STRIDE_TOLERANCE = 0.2


@dataclass(frozen=True)
class GridLayout:
    """How to read one layer output as a spatial grid.

    Attributes:
        kind: ``"nchw"`` (channels first), ``"nhwc"`` (channels last) or ``"tokens"`` (``[N, C]`` per sample).
        height: Grid height ``h``.
        width: Grid width ``w``.
        dropped_tokens: Leading tokens (class/distillation tokens) removed before the reshape; 0 unless tokens.
    """

    kind: Literal["nchw", "nhwc", "tokens"]
    height: int
    width: int
    dropped_tokens: int = 0

    def to_grid(self, t: Tensor) -> Tensor:
        """Return ``t`` (any number of leading dims + the per-sample layer shape) as ``[..., C, h, w]``."""
        if self.kind == "nchw":
            return t
        if self.kind == "nhwc":
            return t.movedim(-1, -3)
        tokens = t[..., self.dropped_tokens :, :]
        grid = tokens.reshape(*tokens.shape[:-2], self.height, self.width, tokens.shape[-1])
        return grid.movedim(-1, -3)


def _tiles(h: int, w: int, input_hw: tuple[int, int]) -> bool:
    """Whether an ``h x w`` grid tiles an input of ``input_hw`` with (nearly) equal strides."""
    height, width = input_hw
    if not (1 <= h <= height and 1 <= w <= width):
        return False
    sh, sw = height / h, width / w
    return abs(sh - sw) <= _STRIDE_TOLERANCE * max(sh, sw)


def _token_grid(n_tokens: int, input_hw: tuple[int, int]) -> GridLayout | None:
    # Prefer all tokens forming the grid; then one leading class token (ViT), then two (DeiT distilled).
    for dropped in (0, 1, 2):
        n = n_tokens - dropped
        if n < 2:
            return None
        best: tuple[float, int, int] | None = None
        for gh in range(1, math.isqrt(n) + 1):
            if n % gh:
                continue
            for h, w in ((gh, n // gh), (n // gh, gh)):
                if _tiles(h, w, input_hw):
                    sh, sw = input_hw[0] / h, input_hw[1] / w
                    mismatch = abs(sh - sw) / max(sh, sw)
                    if best is None or mismatch < best[0]:
                        best = (mismatch, h, w)
        if best is not None:
            return GridLayout("tokens", best[1], best[2], dropped)
    return None


def detect_layout(sample_shape: tuple[int, ...], input_hw: tuple[int, int]) -> GridLayout | None:
    """Infer the grid layout of a per-sample layer output shape, or ``None`` if it is not a spatial map.

    Args:
        sample_shape: The layer output shape without the batch dimension.
        input_hw: The model input's ``(H, W)``.

    Returns:
        The layout, or ``None`` for outputs that cannot be read as a grid (vectors, logits, ...).
    """
    if len(sample_shape) == 3:
        d1, d2, d3 = sample_shape
        if not _tiles(d2, d3, input_hw) and _tiles(d1, d2, input_hw):
            return GridLayout("nhwc", d1, d2)
        return GridLayout("nchw", d2, d3)
    if len(sample_shape) == 2:
        return _token_grid(sample_shape[0], input_hw)
    return None


def layouts_of(
    names: Iterable[str], captured: Mapping[str, Tensor], input_hw: tuple[int, int], *, not_run: str
) -> dict[str, GridLayout]:
    """The grid layout of each captured layer output, for one forward pass.

    Raises:
        InvalidArgumentError: A layer did not run (``not_run`` completes "layer 'x' ...") or its output is not a
            spatial map of this input.
    """
    layouts: dict[str, GridLayout] = {}
    for name in names:
        if name not in captured:
            raise InvalidArgumentError(f"layer {name!r} {not_run}", field="layers")
        shape = tuple(captured[name].shape)
        layout = detect_layout(shape[1:], input_hw)
        if layout is None:
            raise InvalidArgumentError(
                f"layer {name!r} output {shape} is not a spatial map for input {input_hw}", field="layers"
            )
        layouts[name] = layout
    return layouts
