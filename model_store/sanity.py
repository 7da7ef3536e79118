"""The explanation sanity check of Adebayo et al. (2018) for Grad-CAM on the shapes classifier.

Grad-CAM maps of the trained model are compared with those of the same model with (a) all weights re-initialised
and (b) only the last stage and the head re-initialised, by Spearman rank correlation per image. Maps that still
resemble the trained model's after randomisation would show the method ignores what the model learned. Part of the
localisation benchmark (``python -m model_store.evaluate``, which re-exports these names).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn

from handlers.engine import Explainer
from model_store import data

__all__ = ["SanityResult", "randomised", "rank_agreement", "sanity_check"]


def randomised(model: nn.Module, scope: str, seed: int = 0) -> nn.Module:
    """A copy of the shapes classifier with weights re-initialised.

    Args:
        model: The trained classifier (not changed).
        scope: ``"full"`` re-initialises every layer; ``"last_stage"`` only ``layer3`` and ``fc`` (the cascading
            randomisation's first steps, from the top).
        seed: Seed of the new weights.
    """
    if scope not in ("full", "last_stage"):
        raise ValueError(f"scope must be 'full' or 'last_stage', got {scope!r}")
    out = copy.deepcopy(model)
    torch.manual_seed(seed)
    roots = [out] if scope == "full" else [out.get_submodule("layer3"), out.get_submodule("fc")]
    for root in roots:
        for module in root.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
    return out.eval()


@dataclass(frozen=True)
class SanityResult:
    """Spearman rank correlations between Grad-CAM maps of the trained and a randomised model, per image.

    Attributes:
        scope: ``"full"`` or ``"last_stage"``.
        mean_rho: Mean over all images, an image whose randomised (or trained) map is constant scoring 0 (no rank
            agreement can be shown with a map that ranks nothing).
        mean_rho_nonconstant: Mean over the images where both maps vary (``nan`` if none).
        constant_maps: How many images had a constant (typically all-zero after the ReLU) map in either model.
        count: Number of images.
    """

    scope: str
    mean_rho: float
    mean_rho_nonconstant: float
    constant_maps: int
    count: int
    rhos: tuple[float, ...] = field(repr=False, default=())


def _gradcam_maps(model: nn.Module, x: Tensor, labels: list[int], layer: str) -> list[Tensor]:
    ex = Explainer(model, layers=layer, input_size=(x.shape[-2], x.shape[-1]))
    return [e.map("gradcam", layer) for e in ex.explain(x, methods=("gradcam",), targets=labels)]


def sanity_check(
    model: nn.Module, batch: data.Batch, layer: str = "layer3", scopes: Sequence[str] = ("full", "last_stage")
) -> list[SanityResult]:
    """Adebayo et al. (2018) model-randomisation test for Grad-CAM on ``layer``, ground-truth class as target.

    Maps are compared at native resolution (upsampling does not change ranks' agreement materially and would add
    interpolation ties). Grad-CAM ends in a ReLU, so a random model often yields an all-zero map whose Spearman
    correlation is undefined: such images are counted (``constant_maps``) and scored 0 in ``mean_rho``; the mean over
    the remaining images is reported separately, and both must be low for the check to pass.
    """
    x = data.to_tensor(batch.images)
    labels = [int(v) for v in batch.labels]
    trained = _gradcam_maps(model, x, labels, layer)
    return [
        rank_agreement(scope, trained, _gradcam_maps(randomised(model, scope), x, labels, layer)) for scope in scopes
    ]


def rank_agreement(scope: str, maps_a: Sequence[Tensor], maps_b: Sequence[Tensor]) -> SanityResult:
    """Per-pair Spearman rank correlation of two lists of maps; constant maps are counted and scored 0."""
    rhos: list[float] = []
    nonconstant: list[float] = []
    constant = 0
    for a, b in zip(maps_a, maps_b, strict=True):
        if float(a.max() - a.min()) == 0 or float(b.max() - b.min()) == 0:
            constant += 1
            rhos.append(0.0)
            continue
        rho = float(spearmanr(a.flatten().cpu().numpy(), b.flatten().cpu().numpy()).statistic)
        rhos.append(rho)
        nonconstant.append(rho)
    return SanityResult(
        scope=scope,
        mean_rho=float(np.mean(rhos)) if rhos else math.nan,
        mean_rho_nonconstant=float(np.mean(nonconstant)) if nonconstant else math.nan,
        constant_maps=constant,
        count=len(rhos),
        rhos=tuple(rhos),
    )
