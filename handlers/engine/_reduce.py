"""Display reductions for signed input-gradient maps ``[3, H, W]`` (saliency, guided backprop, deconvnet, ...).

The engine returns raw signed gradients so nothing is lost; these helpers give the usual pictures: the whole
gradient, its positive or negative part rescaled to ``[0, 1]`` (3 channels), or one channel by the channel-max of
``|g|`` (Simonyan et al.'s saliency map) or by luminance.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from handlers.engine._result import minmax
from handlers.engine.errors import InvalidArgumentError

__all__ = ["GradientReduction", "reduce_gradient"]

GradientReduction = Literal["abs_max", "luminance", "all", "positive", "negative"]
_LUMA = (0.299, 0.587, 0.114)


def reduce_gradient(gradient: Tensor, how: GradientReduction = "abs_max") -> Tensor:
    """Reduce a ``[C, H, W]`` (or batched ``[..., C, H, W]``) gradient map for display.

    Args:
        gradient: A signed gradient map.
        how: ``"abs_max"``: ``max_c |g|`` -> ``[H, W]`` (not rescaled). ``"all"``: ``g`` rescaled to ``[0, 1]``
            (0 at the minimum). ``"positive"`` / ``"negative"``: ``max(g, 0)`` / ``max(-g, 0)`` rescaled to
            ``[0, 1]``. ``"luminance"``: luminance of the ``"all"`` picture (3 channels) -> ``[H, W]`` in ``[0, 1]``.
            Rescaling is per map (over the last three dimensions).

    Raises:
        InvalidArgumentError: Unknown reduction, or fewer than 3 dimensions (or not 3 channels for luminance).
    """
    if gradient.ndim < 3:
        raise InvalidArgumentError(f"gradient must be [..., C, H, W], got {tuple(gradient.shape)}")
    g = gradient.float()
    if how == "abs_max":
        return g.abs().amax(dim=-3)
    if how == "all":
        return _rescale(g)
    if how == "positive":
        return _rescale(torch.relu(g))
    if how == "negative":
        return _rescale(torch.relu(-g))
    if how == "luminance":
        if g.shape[-3] != 3:
            raise InvalidArgumentError(f"luminance needs 3 channels, got {g.shape[-3]}")
        weights = torch.tensor(_LUMA, dtype=g.dtype, device=g.device).reshape(3, 1, 1)
        return (_rescale(g) * weights).sum(dim=-3)
    raise InvalidArgumentError(f"unknown reduction {how!r}; use abs_max, luminance, all, positive or negative")


def _rescale(g: Tensor) -> Tensor:
    flat = g.reshape(-1, *g.shape[-3:])
    return torch.stack([minmax(m) for m in flat]).reshape(g.shape)
