"""Gradient-weighted attention (Chefer, Gur & Wolf, ICCV 2021, "Generic Attention-model Explainability") for ViTs.

Per block, the attention weights are weighted by their gradients and the positive part averaged over the heads,
``Ā_l = mean_heads((dY/dW_l ⊙ W_l)^+)``; the relevance starts at ``R = I`` and accumulates ``R <- R + Ā_l R`` through
the blocks in forward order; the map is the class token's row over the patch tokens. Unlike rollout it depends on
the explained class.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from handlers.engine.methods._base import MethodContext, Need
from handlers.engine.methods._params import Cost
from handlers.engine.methods._rollout import AttentionMethod, class_token_map

__all__ = ["GradientAttention"]


class GradientAttention(AttentionMethod):
    """The class token's row of ``R``, ``R_0 = I``, ``R_l = R_{l-1} + mean_heads((g_l W_l)^+) R_{l-1}``."""

    name = "gradient_attention"
    needs: ClassVar[frozenset[Need]] = frozenset({"attention", "attention_grad"})
    cost: ClassVar[Cost] = Cost(backwards=1)  # the shared plain backward pass

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        weights, grads = ctx.attention(), ctx.attention_gradient()
        n = int(weights[0].shape[-1])
        eye = torch.eye(n, dtype=weights[0].dtype, device=weights[0].device)
        r = eye.expand(*grads[0].shape[:2], n, n)
        for w, g in zip(weights, grads, strict=True):
            r = r + (g * w).clamp(min=0).mean(dim=2) @ r
        return class_token_map(r, ctx.token_grid)
