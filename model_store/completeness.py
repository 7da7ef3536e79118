"""Integrated Gradients' completeness error at the default steps, on the demo classifier and on EfficientNet-Lite0.

The error of a map is ``|sum of attributions - (score(x) - score(baseline))| / |score(x) - score(baseline)|`` with the
explained class's logit as the score (the engine's ``Explanation.completeness_errors``). Checked at the engine's
defaults (50 Gauss-Legendre steps from a black baseline, black being the model's normalisation of a black pixel):

* the shapes classifier on held-out shapes images, explaining the ground-truth class;
* EfficientNet-Lite0 (``model_store.imagenet``) on the sample photographs, explaining the top-1 class.

:func:`main` of ``model_store.evaluate`` prints both beside the pointing game; the bar is :data:`BAR`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor, nn

from handlers.engine import Explainer, MethodParams

__all__ = ["BAR", "CompletenessReport", "completeness", "photographs_report"]

#: The largest acceptable completeness error at the default steps.
BAR = 0.05


@dataclass(frozen=True)
class CompletenessReport:
    """Completeness errors of one model's Integrated Gradients maps.

    Attributes:
        model: The model's name.
        names: What each error belongs to (an image name or index and its class).
        errors: One error per explained image, in order.
        params: The method parameters used.
    """

    model: str
    names: tuple[str, ...]
    errors: tuple[float, ...]
    params: MethodParams

    @property
    def worst(self) -> float:
        """The largest error."""
        return max(self.errors)

    def lines(self, *, each: bool) -> list[str]:
        """The report as text: a summary line, then (``each``) one line per image."""
        mean = sum(self.errors) / len(self.errors)
        verdict = "below" if self.worst < BAR else "NOT below"
        head = (
            f"Integrated Gradients completeness error, {self.model}, {self.params.steps} {self.params.rule} steps, "
            f"{self.params.baseline} baseline: max {self.worst:.4f}, mean {mean:.4f} over {len(self.errors)} images "
            f"({verdict} {BAR})"
        )
        return (
            [head, *(f"  {name:<40}{err:.4f}" for name, err in zip(self.names, self.errors, strict=True))]
            if each
            else [head]
        )


def completeness(
    model_name: str,
    explainer: Explainer,
    x: Tensor,
    targets: Sequence[int] | None,
    names: Sequence[str],
    params: MethodParams | None = None,
    batch_size: int = 50,
) -> CompletenessReport:
    """The completeness error of each image's Integrated Gradients map (``targets`` ``None``: the top-1 class)."""
    p = params or MethodParams()
    errors: list[float] = []
    labels: list[str] = []
    for start in range(0, len(x), batch_size):
        part = x[start : start + batch_size]
        chosen = None if targets is None else [int(t) for t in targets[start : start + batch_size]]
        for i, res in enumerate(explainer.explain(part, methods=("integrated_gradients",), targets=chosen, options=p)):
            [(key, err)] = res.completeness_errors.items()
            label = next((pr.label for pr in res.predictions if pr.class_id == key.target), None) or str(key.target)
            labels.append(f"{names[start + i]} ({label})")
            errors.append(err)
    return CompletenessReport(model_name, tuple(labels), tuple(errors), p)


def photographs_report(params: MethodParams | None = None) -> CompletenessReport:
    """EfficientNet-Lite0 on every sample photograph, top-1 class, black = the normalisation of a black pixel."""
    from model_store import imagenet

    model: nn.Module = imagenet.build()
    black = [-m / s for m, s in zip(imagenet.MEAN, imagenet.STD, strict=True)]
    explainer = Explainer(
        model,
        layers=imagenet.DEFAULT_LAYERS,
        labels=imagenet.labels(),
        input_size=imagenet.INPUT_SIZE,
        black=black,
    )
    pre = imagenet.preprocessor()
    pixels = []
    for name in imagenet.SAMPLES:
        with Image.open(imagenet.sample_path(name)) as img:
            pixels.append(pre.from_pil(img.convert("RGB"))[0])
    return completeness(imagenet.SPEC, explainer, torch.stack(pixels), None, imagenet.SAMPLES, params)
