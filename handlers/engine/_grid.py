"""Turn a layer's output into a ``[..., C, h, w]`` spatial grid, whatever its layout.

CNN layers give channels-first maps ``[B, C, h, w]``; Swin-style models keep channels last ``[B, h, w, C]``; vision
transformers give tokens ``[B, N, C]`` with ``N = g_h * g_w`` patch tokens, possibly after class, distillation or
register tokens. The layout is inferred from the per-sample shape and the input size (a grid must tile the input with
about the same stride in both directions), so the same CAM code serves every architecture, as pytorch-grad-cam's
``reshape_transform`` does by hand. When the model's patch size is known (its patch-embedding convolution, see
``_layers.patch_size``), a token layer's grid is exactly ``(H // p_h, W // p_w)`` and every token before the patch
tokens is dropped (up to :data:`MAX_PREFIX_TOKENS`); token counts that fit no patch grid fall back to the inference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from handlers.engine.errors import InvalidArgumentError

__all__ = ["MAX_PREFIX_TOKENS", "GridLayout", "detect_layout", "layouts_of"]

# Largest relative difference between the vertical and horizontal strides of a plausible grid.
_STRIDE_TOLERANCE = 0.2
#: Most leading non-patch tokens (class, distillation, register tokens) a token layer of a patch model may carry.
MAX_PREFIX_TOKENS = 8


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


def _patch_grid(n_tokens: int, input_hw: tuple[int, int], patch: tuple[int, int]) -> GridLayout | None:
    """The layout of ``n_tokens`` tokens as the patch grid of the input after up to MAX_PREFIX_TOKENS leading ones."""
    gh, gw = input_hw[0] // patch[0], input_hw[1] // patch[1]
    prefix = n_tokens - gh * gw
    if gh * gw > 1 and 0 <= prefix <= MAX_PREFIX_TOKENS:
        return GridLayout("tokens", gh, gw, prefix)
    return None


def detect_layout(
    sample_shape: tuple[int, ...], input_hw: tuple[int, int], patch: tuple[int, int] | None = None
) -> GridLayout | None:
    """Infer the grid layout of a per-sample layer output shape, or ``None`` if it is not a spatial map.

    Args:
        sample_shape: The layer output shape without the batch dimension.
        input_hw: The model input's ``(H, W)``.
        patch: The model's patch size ``(p_h, p_w)``, when it has a patch embedding (fixes token grids).

    Returns:
        The layout, or ``None`` for outputs that cannot be read as a grid (vectors, logits, ...).
    """
    if len(sample_shape) == 3:
        d1, d2, d3 = sample_shape
        if not _tiles(d2, d3, input_hw) and _tiles(d1, d2, input_hw):
            return GridLayout("nhwc", d1, d2)
        return GridLayout("nchw", d2, d3)
    if len(sample_shape) == 2:
        exact = _patch_grid(sample_shape[0], input_hw, patch) if patch is not None else None
        return exact or _token_grid(sample_shape[0], input_hw)
    return None


def _not_a_grid(name: str, shape: tuple[int, ...], input_hw: tuple[int, int], patch: tuple[int, int] | None) -> str:
    """Why layer ``name``'s output of ``shape`` is not a spatial map, naming the expected token count if it has one."""
    if len(shape) == 3 and patch is not None:
        gh, gw = input_hw[0] // patch[0], input_hw[1] // patch[1]
        return (
            f"layer {name!r} output {shape} has {shape[1]} tokens; a token layer of this model has its "
            f"{gh}x{gw} grid of {patch[0]}x{patch[1]} patches at input {input_hw} ({gh * gw} tokens) after at most "
            f"{MAX_PREFIX_TOKENS} class/register tokens, or a grid that tiles the input"
        )
    return f"layer {name!r} output {shape} is not a spatial map for input {input_hw}"


def layouts_of(
    names: Iterable[str],
    captured: Mapping[str, Tensor],
    input_hw: tuple[int, int],
    *,
    not_run: str,
    patch: tuple[int, int] | None = None,
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
        layout = detect_layout(shape[1:], input_hw, patch)
        if layout is None:
            raise InvalidArgumentError(_not_a_grid(name, shape, input_hw, patch), field="layers")
        layouts[name] = layout
    return layouts
