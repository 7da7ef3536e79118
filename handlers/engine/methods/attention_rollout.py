"""Attention rollout (Abnar & Zuidema 2020) with the heads averaged: how much each patch feeds the class token."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from handlers.engine.methods._base import MethodContext, Need
from handlers.engine.methods._rollout import AttentionMethod, HeadFusion, class_token_map, rollout

__all__ = ["AttentionRollout"]


class AttentionRollout(AttentionMethod):
    """The class token's row of ``A_L ... A_1``, ``A_l = (mean_heads(W_l) + I) / 2``; no target, no backward pass."""

    name = "attention_rollout"
    needs: ClassVar[frozenset[Need]] = frozenset({"attention"})
    fusion: ClassVar[HeadFusion] = "mean"

    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        cam = class_token_map(rollout(ctx.attention(), self.fusion), ctx.token_grid)
        return cam.unsqueeze(0).expand(ctx.rows, *cam.shape)
