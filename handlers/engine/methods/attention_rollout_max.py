"""Attention rollout with the heads fused by their maximum (the common variant of vit-explain), row-normalised."""

from __future__ import annotations

from typing import ClassVar

from handlers.engine.methods._rollout import HeadFusion
from handlers.engine.methods.attention_rollout import AttentionRollout

__all__ = ["AttentionRolloutMax"]


class AttentionRolloutMax(AttentionRollout):
    """The class token's row of ``A_L ... A_1``, ``A_l = rownorm(max_heads(W_l) + I)``."""

    name = "attention_rollout_max"
    fusion: ClassVar[HeadFusion] = "max"
