"""Pixel AUROC of the VAE anomaly maps against the ground-truth masks of held-out defect images.

``python -m model_store.anomaly [--images 300] [--sheet out/anomaly.png]`` (and ``python -m model_store.evaluate``,
which prints the same report) scores, on :func:`model_store.defects.make_defect_batch` images, every pixel of every
image by each map and reports the area under the ROC curve of those scores against "the defect changed this pixel",
pooled over all pixels of the images of one defect kind and over all images (``--sheet`` also draws examples):

* ``anomaly_recon_error`` and ``anomaly_latent`` (the engine's maps; layer maps are upsampled bilinearly to the input,
  as :meth:`~handlers.engine.Explanation.upsampled` does), ``anomaly_latent`` on a few encoder layers;
* the plain baseline: the squared error of ``vae(x)`` summed over channels, computed here without the engine.

The AUROC is the Mann-Whitney statistic, ``P(score of a defect pixel > score of a clean pixel)`` with ties counted
one half: 0.5 is chance, 1.0 a perfect separation.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from handlers.engine import IMAGE_TARGET, VAEExplainer
from model_store import data, defects, zoo

__all__ = [
    "ANOMALY_IMAGES",
    "ANOMALY_LAYERS",
    "AnomalyReport",
    "anomaly_report",
    "anomaly_scores",
    "anomaly_sheet",
    "main",
    "pixel_auroc",
]

ANOMALY_IMAGES = 300
"""Defect images of the benchmark (100 of each kind)."""

ANOMALY_LAYERS: tuple[str, ...] = ("encoder.1", "encoder.3", "encoder")
"""Encoder layers ``anomaly_latent`` is scored on: the first two ReLU outputs (32x32, 16x16 at 64x64 input) and the
explainer's automatic layer (the encoder's 8x8 output)."""

BASELINE = "baseline: |vae(x) - x|^2"


def pixel_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the binary ``labels`` (any equal shapes; flattened).

    Rank-based (Mann-Whitney U): average ranks over ties, so it equals the fraction of (positive, negative) pairs
    ordered correctly, ties counting one half.

    Raises:
        ValueError: Different shapes, non-finite scores, or labels of one class only.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if np.shape(scores) != np.shape(labels):
        raise ValueError(f"scores {np.shape(scores)} and labels {np.shape(labels)} differ in shape")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    positives = int(y.sum())
    negatives = int(y.size - positives)
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUROC needs both classes; got {positives} positives and {negatives} negatives")
    order = np.argsort(s, kind="mergesort")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based average rank of each tie group
    return float((ranks[y].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def anomaly_scores(
    vae: nn.Module, x: Tensor, layers: Sequence[str] = ANOMALY_LAYERS, batch_size: int = 50
) -> dict[str, np.ndarray]:
    """Every scored map of ``x`` ``[N, 3, H, W]`` at input resolution, ``[N, H, W]`` each, by row name.

    Rows: ``anomaly_recon_error``, ``anomaly_latent @ <layer>`` per layer, and :data:`BASELINE`.
    """
    explainer = VAEExplainer(vae)
    rows: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(x), batch_size):
        part = x[start : start + batch_size]
        results = explainer.explain(part, methods=("anomaly_recon_error", "anomaly_latent"), layers=tuple(layers))
        for e in results:
            rows.setdefault("anomaly_recon_error", []).append(
                e.upsampled("anomaly_recon_error", "", IMAGE_TARGET).cpu().numpy()
            )
            for layer in layers:
                heat = e.upsampled("anomaly_latent", layer, IMAGE_TARGET).cpu().numpy()
                rows.setdefault(f"anomaly_latent @ {layer}", []).append(heat)
        with torch.no_grad():
            rows.setdefault(BASELINE, []).extend((vae(part) - part).square().sum(dim=1).cpu().numpy())
    return {name: np.stack(maps) for name, maps in rows.items()}


@dataclass(frozen=True)
class AnomalyReport:
    """Pixel AUROC per scored map: ``overall[name]`` over all images, ``per_kind[name][kind]`` per defect kind.

    Attributes:
        images: How many defect images were scored; ``start`` is the first one's test-split index.
        auto_layer: The explainer's automatic layer (marked in the table).
    """

    overall: dict[str, float]
    per_kind: dict[str, dict[str, float]]
    images: int
    start: int
    auto_layer: str

    def lines(self) -> list[str]:
        """The table printed by the benchmark."""
        kinds = defects.DEFECT_KINDS
        end = self.start + self.images - 1
        out = [
            f"\nVAE anomaly maps: pixel AUROC on {self.images} held-out defect images (test split {self.start}..{end},"
            " one defect each, kinds in turn)",
            f"{'map':<34}" + "".join(f"{k:>9}" for k in kinds) + f"{'all':>9}",
        ]
        for name, auc in self.overall.items():
            label = name + (" (auto)" if name.endswith(f"@ {self.auto_layer}") else "")
            out.append(f"{label:<34}" + "".join(f"{self.per_kind[name][k]:>9.3f}" for k in kinds) + f"{auc:>9.3f}")
        out.append(f"{'chance':<34}" + "".join(f"{0.5:>9.3f}" for _ in kinds) + f"{0.5:>9.3f}")
        return out


def anomaly_report(
    vae: nn.Module,
    images: int = ANOMALY_IMAGES,
    start: int = defects.DEFECT_START,
    layers: Sequence[str] = ANOMALY_LAYERS,
) -> AnomalyReport:
    """Score :func:`anomaly_scores` of ``images`` defect images from ``start`` against their masks.

    Raises:
        ValueError: Fewer images than defect kinds (every kind needs at least one image).
    """
    if images < len(defects.DEFECT_KINDS):
        raise ValueError(f"images must be >= {len(defects.DEFECT_KINDS)} (one per defect kind), got {images}")
    batch = defects.make_defect_batch(images, start)
    scores = anomaly_scores(vae, data.to_tensor(batch.images), layers)
    overall = {name: pixel_auroc(s, batch.masks) for name, s in scores.items()}
    per_kind = {
        name: {
            kind: pixel_auroc(s[batch.kinds == k], batch.masks[batch.kinds == k])
            for k, kind in enumerate(defects.DEFECT_KINDS)
        }
        for name, s in scores.items()
    }
    auto = VAEExplainer(vae).default_layers
    return AnomalyReport(overall, per_kind, images, start, auto[0] if auto else "")


def anomaly_sheet(vae: nn.Module, path: Path, per_kind: int = 2, layer: str = ANOMALY_LAYERS[0]) -> None:
    """Write a PNG: one column per example (``per_kind`` of each defect kind, the benchmark's first images); rows the
    defect image, its ground-truth mask, the reconstruction, ``anomaly_recon_error`` and ``anomaly_latent`` on
    ``layer`` (each map min-max scaled on its own)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = per_kind * len(defects.DEFECT_KINDS)
    batch = defects.make_defect_batch(count)
    x = data.to_tensor(batch.images)
    order = [i for k in range(len(defects.DEFECT_KINDS)) for i in np.flatnonzero(batch.kinds == k)]
    scores = anomaly_scores(vae, x, (layer,))
    with torch.no_grad():
        recon = vae(x).permute(0, 2, 3, 1).clamp(0, 1).numpy()
    rows = [
        ("defect", batch.images, None),
        ("ground truth", batch.masks, "gray"),
        ("reconstruction", recon, None),
        ("anomaly_recon_error", scores["anomaly_recon_error"], "inferno"),
        (f"anomaly_latent\n@ {layer}", scores[f"anomaly_latent @ {layer}"], "inferno"),
    ]
    fig, axes = plt.subplots(len(rows), count, figsize=(1.3 * count, 1.35 * len(rows)), squeeze=False)
    for r, (title, values, cmap) in enumerate(rows):
        for c, i in enumerate(order):
            ax = axes[r][c]
            ax.imshow(values[i], cmap=cmap, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(defects.DEFECT_KINDS[batch.kinds[i]], fontsize=7)
            if c == 0:
                ax.set_ylabel(title, fontsize=6)
    fig.suptitle("shapes-vae anomaly maps on held-out defect images", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=ANOMALY_IMAGES, help="defect images (kinds in turn)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core host)")
    parser.add_argument("--sheet", type=Path, default=None, help="also write a PNG of examples to this path")
    args = parser.parse_args(argv)
    if args.images < len(defects.DEFECT_KINDS):
        parser.error(f"--images must be >= {len(defects.DEFECT_KINDS)}")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    vae = zoo.build("shapes-vae")
    print("\n".join(anomaly_report(vae, args.images).lines()))
    if args.sheet is not None:
        anomaly_sheet(vae, args.sheet)
        print(f"examples: {args.sheet}")
    print(f"total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
