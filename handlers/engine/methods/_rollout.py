"""What the attention methods share: their applicability, head fusion, and reading the class token's row as a grid."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor

from handlers.engine._grid import GridLayout
from handlers.engine.errors import InvalidArgumentError
from handlers.engine.methods._base import Method, ModelFacts, Scope

__all__ = ["AttentionMethod", "HeadFusion", "class_token_map", "rollout"]

HeadFusion = Literal["mean", "max"]


class AttentionMethod(Method):
    """A method over a vision transformer's self-attention layers: one map per target at the token grid (layer ``""``).

    Applicable to models with ``nn.MultiheadAttention`` self-attention blocks (torchvision's ``VisionTransformer``).
    """

    scope: ClassVar[Scope] = "input"

    def applicable(self, facts: ModelFacts) -> bool:
        return bool(facts.attention_layers)


def rollout(attentions: Sequence[Tensor], fusion: HeadFusion) -> Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``R = A_L ... A_1`` with ``A_l = rownorm(fuse_heads(W_l) + I)``.

    Args:
        attentions: Each layer's weights ``[B, heads, N, N]``, in forward order.
        fusion: How heads are fused: their mean (the paper's average attention) or their maximum.

    Returns:
        ``[B, N, N]``; every row sums to 1 (a product of row-stochastic matrices).
    """
    first = attentions[0]
    n = int(first.shape[-1])
    eye = torch.eye(n, dtype=first.dtype, device=first.device)
    r = eye.expand(int(first.shape[0]), n, n)
    for w in attentions:
        fused = w.mean(dim=1) if fusion == "mean" else w.amax(dim=1)
        a = fused + eye
        r = (a / a.sum(dim=-1, keepdim=True)) @ r
    return r


def class_token_map(relevance: Tensor, grid: GridLayout) -> Tensor:
    """The class token's row ``[..., N, N] -> [..., h, w]`` over the patch tokens (leading tokens dropped).

    Raises:
        InvalidArgumentError: The tokens have no leading class token to read.
    """
    if grid.dropped_tokens < 1:
        raise InvalidArgumentError(
            f"attention methods read the class token's row, but the {grid.height}x{grid.width} patch tokens have no "
            "leading class token",
            field="methods",
        )
    row = relevance[..., 0, grid.dropped_tokens :]
    return row.reshape(*row.shape[:-1], grid.height, grid.width)
