"""Feature maps: the top channels of a layer's output, taken from the forward pass that made the prediction.

"What does this layer see?" is answered with the layer's own activations at native resolution (no upsampling, no
normalisation), for the ``top_n`` channels that matter most for an image: by mean activation (what the layer
responds to most strongly) or by Grad-CAM weight ``mean_hw(dy/dA_c)`` for each explained target (the channels the
class score leans on most). Both come from the activations and gradients the explainer already computed, so a
feature-map request costs no extra forward pass; the Grad-CAM ranking shares the one CAM backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from torch import Tensor

from handlers.engine._result import NO_TARGET, FeatureMap
from handlers.engine.errors import InvalidArgumentError

__all__ = ["FEATURE_RANKS", "FeatureMapSpec", "FeatureRank", "select_feature_maps"]

FeatureRank = Literal["mean", "gradcam"]
FEATURE_RANKS: Final[tuple[FeatureRank, ...]] = ("mean", "gradcam")


@dataclass(frozen=True)
class FeatureMapSpec:
    """What :meth:`Explainer.explain` returns as feature maps.

    Attributes:
        layers: Layers by dotted name; ``None`` = the call's layers (or the explainer's default layers).
        top_n: Channels per layer (and per target for ``rank="gradcam"``); fewer when the layer has fewer.
        rank: ``"mean"``: highest mean activation; ``"gradcam"``: highest Grad-CAM weight for each target.

    Raises:
        InvalidArgumentError: ``top_n`` is not a positive int, ``rank`` is unknown, or ``layers`` is empty.
    """

    layers: tuple[str, ...] | None = None
    top_n: int = 8
    rank: FeatureRank = "mean"

    def __post_init__(self) -> None:
        if isinstance(self.top_n, bool) or not isinstance(self.top_n, int) or self.top_n < 1:
            raise InvalidArgumentError(f"top_n must be an int >= 1, got {self.top_n!r}", field="feature_maps.top_n")
        if self.rank not in FEATURE_RANKS:
            raise InvalidArgumentError(
                f"rank must be one of {', '.join(FEATURE_RANKS)}, got {self.rank!r}", field="feature_maps.rank"
            )
        if self.layers is not None:
            if isinstance(self.layers, str):
                object.__setattr__(self, "layers", (self.layers,))
            if not self.layers:
                raise InvalidArgumentError(
                    "feature_maps.layers is empty; pass None for the call's layers", field="feature_maps.layers"
                )

    @property
    def needs_gradient(self) -> bool:
        """Whether the ranking needs d score / d layer output (the CAM backward pass)."""
        return self.rank == "gradcam"


def select_feature_maps(
    spec: FeatureMapSpec,
    layers: Sequence[str],
    activations: dict[str, Tensor],
    gradients: dict[str, Tensor],
    targets: Sequence[Sequence[int]],
) -> list[tuple[FeatureMap, ...]]:
    """The top channels of every layer, per image.

    Args:
        spec: The validated request.
        layers: The feature-map layers, in request order.
        activations: Each layer's output as a grid ``[B, C, h, w]`` (float32).
        gradients: For ``rank="gradcam"``: d score / d layer output as a grid ``[k, B, C, h, w]``.
        targets: The explained targets of each image (row ``j`` of the gradients is target ``j``).

    Returns:
        One tuple per image: layer by layer, best channel first (for ``gradcam``: per target, in target order).
    """
    batch = len(targets)
    out: list[list[FeatureMap]] = [[] for _ in range(batch)]
    for layer in layers:
        grid = activations[layer]
        n = min(spec.top_n, int(grid.shape[1]))
        if spec.rank == "mean":
            scores, channels = grid.mean(dim=(2, 3)).topk(n, dim=1)
            for i in range(batch):
                for s, c in zip(scores[i].tolist(), channels[i].tolist(), strict=True):
                    out[i].append(FeatureMap(layer, int(c), float(s), NO_TARGET, grid[i, c]))
            continue
        weights = gradients[layer].mean(dim=(-2, -1))  # [k, B, C], Grad-CAM's channel weights
        scores, channels = weights.topk(n, dim=2)
        for i, ids in enumerate(targets):
            for j, target in enumerate(ids):
                for s, c in zip(scores[j, i].tolist(), channels[j, i].tolist(), strict=True):
                    out[i].append(FeatureMap(layer, int(c), float(s), int(target), grid[i, c]))
    return [tuple(maps) for maps in out]
