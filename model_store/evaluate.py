"""The localisation benchmark: do the explanation maps point at the object?

Usage::

    python -m model_store.evaluate [--images 500] [--sanity 100] [--sheet out/localisation.png]

On a fresh set of held-out images (``test`` split indices from :data:`EVAL_START`, never used for training, for the
manifest's metrics or by the tests) it prints:

* the classifier's accuracy (and the VAE's reconstruction MSE);
* per explanation method and per layer, with the ground-truth class as the target:
  - **pointing game** — the argmax pixel of the map, *bilinearly* upsampled to the image (never nearest: its ties
    inflate the score), lies inside the ground-truth box. A map that is zero everywhere has no argmax and counts
    as a miss (the number of such maps is printed);
  - **energy in box** — the share of the map's positive mass that lies inside the box.
  Input-gradient maps (saliency, guided backprop, deconvnet, guided Grad-CAM) are reduced to one channel by
  ``max_c |g|`` first. For reference, a uniformly random point hits the box with probability = mean box area share
  (printed as "chance"). Integrated Gradients, SmoothGrad and Score-CAM run at the engine's defaults, except
  ``smoothgrad_integrated_gradients`` (:data:`SMOOTH_IG`: 10 samples x 10 steps instead of 20 x 50, 1000 passes
  per image);
* Integrated Gradients' completeness error at the default steps on the shapes classifier (held-out images) and on
  EfficientNet-Lite0 (the sample photographs), see :mod:`model_store.completeness`;
* the explanation sanity check of Adebayo et al. (2018): Grad-CAM maps of the trained model versus the same model
  with (a) all weights re-initialised and (b) only the last stage and the head re-initialised, compared by Spearman
  rank correlation per image (see :func:`sanity_check` for how all-zero maps are handled).

It writes a PNG contact sheet: per example the image with its box, each method's overlay (inferno colormap,
bilinear upsampling, box and argmax marked) and the VAE reconstruction.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor, nn

from handlers.engine import (
    Explainer,
    Explanation,
    MethodParams,
    VAEExplainer,
    available_methods,
    get_method,
    reduce_gradient,
)
from model_store import anomaly, completeness, data, zoo
from model_store.locality import LocalityReport, area_locality
from model_store.models import ShapesVAE

__all__ = [
    "EVAL_START",
    "VAE_LOCALITY_IMAGES",
    "LocalisationScore",
    "SanityResult",
    "energy_in_box",
    "evaluate_vae",
    "heatmap",
    "localisation",
    "main",
    "pointing_hit",
    "randomised",
    "rank_agreement",
    "sanity_check",
    "vae_area_locality",
]

EVAL_START = 1_000_000
"""First ``test``-split index used by the benchmark (the manifest's test metrics use indices from 0)."""

SWEEP_LAYERS: tuple[str, ...] = ("layer1", "layer2", "layer3")
"""Layers of the classifier swept by the CAM-family methods (the automatic choice is ``layer3``)."""

SMOOTH_IG = MethodParams(samples=10, steps=10)
"""``smoothgrad_integrated_gradients``' parameters in the benchmark (its defaults cost 1000 passes per image)."""
COMPLETENESS_IMAGES = 100
"""Held-out shapes images for the completeness error."""


# ------------------------------------------------------------------------------------------------------ the metrics


def heatmap(explanation: Explanation, method: str, layer: str, target: int) -> Tensor:
    """One-channel map at the input resolution: bilinear upsampling; gradient maps reduced by ``max_c |g|``."""
    m = explanation.upsampled(method, layer, target, mode="bilinear")
    return reduce_gradient(m, "abs_max") if m.ndim == 3 else m


def pointing_hit(heat: Tensor, box: Sequence[int]) -> bool | None:
    """Whether the argmax of ``heat [H, W]`` lies in ``box`` (x0, y0, x1, y1 half-open); ``None`` for a zero map."""
    if not bool((heat > 0).any()):
        return None
    idx = int(torch.argmax(heat))
    y, x = divmod(idx, heat.shape[-1])
    x0, y0, x1, y1 = (int(v) for v in box)
    return x0 <= x < x1 and y0 <= y < y1


def energy_in_box(heat: Tensor, box: Sequence[int]) -> float:
    """Share of the positive mass of ``heat [H, W]`` inside ``box``; 0 for a map without positive mass."""
    pos = heat.clamp_min(0)
    total = float(pos.sum())
    if total <= 0:
        return 0.0
    x0, y0, x1, y1 = (int(v) for v in box)
    return float(pos[y0:y1, x0:x1].sum()) / total


@dataclass
class LocalisationScore:
    """Accumulated pointing-game and energy-in-box results of one (method, layer)."""

    method: str
    layer: str
    hits: int = 0
    energy_sum: float = 0.0
    count: int = 0
    zero_maps: int = 0

    @property
    def pointing(self) -> float:
        """Pointing-game accuracy; zero maps count as misses."""
        return self.hits / max(1, self.count)

    @property
    def energy(self) -> float:
        """Mean energy-in-box."""
        return self.energy_sum / max(1, self.count)


def localisation(
    explainer: Explainer,
    batch: data.Batch,
    methods: Sequence[str],
    layers: Sequence[str],
    batch_size: int = 50,
    options: MethodParams | None = None,
) -> dict[tuple[str, str], LocalisationScore]:
    """Score ``methods`` x ``layers`` on ``batch``, explaining each image's ground-truth class.

    Input-gradient methods (saliency, guided backprop, deconvnet) do not depend on the layer and are scored once
    (layer ``""``); methods that read the linear head (``cam``) are scored on the explainer's automatic layer only.
    """
    scores: dict[tuple[str, str], LocalisationScore] = {}
    # The head's weights apply only on layers that reach the logits through GAP + linear: the automatic layer
    on_head = tuple(m for m in methods if "head_weights" in get_method(m).needs)
    groups = [(tuple(m for m in methods if m not in on_head), tuple(layers)), (on_head, explainer.default_layers)]
    for start in range(0, len(batch), batch_size):
        x = data.to_tensor(batch.images[start : start + batch_size])
        labels = [int(v) for v in batch.labels[start : start + batch_size]]
        results = [
            expl
            for group_methods, group_layers in groups
            if group_methods
            for expl in explainer.explain(
                x, methods=group_methods, layers=group_layers, targets=labels, options=options
            )
        ]
        for j, expl in enumerate(results):
            i = j % len(labels)
            box = batch.boxes[start + i]
            for key in expl.maps:
                score = scores.setdefault((key.method, key.layer), LocalisationScore(key.method, key.layer))
                heat = heatmap(expl, key.method, key.layer, key.target)
                hit = pointing_hit(heat, box)
                score.count += 1
                score.zero_maps += hit is None
                score.hits += bool(hit)
                score.energy_sum += energy_in_box(heat, box)
    return scores


# -------------------------------------------------------------------------------------------------- sanity check


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


# ------------------------------------------------------------------------------------------------------------- VAE


@torch.no_grad()
def evaluate_vae(vae: ShapesVAE, images: Tensor, batch_size: int = 100) -> tuple[float, Tensor]:
    """Reconstruction MSE (per pixel and channel, [0, 1] scale) of ``decode(mu(x))`` and the reconstructions."""
    recon = torch.cat([vae(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    return float(F.mse_loss(recon, images)), recon


# VAE area maps (issue 4): the mass-near-region metrics of `area_saliency` (share of |grad| mass within the region
# grown by 0/4/8/16 px, centre-of-mass distance) come from `model_store.locality`, on the engine's VAE explainer,
# and are printed by `main` after the VAE reconstruction line.

#: Held-out images (from ``EVAL_START``) for the VAE locality metrics: 4 random 8x8 boxes each = 200 regions.
VAE_LOCALITY_IMAGES = 50


def vae_area_locality(vae: nn.Module, images: Tensor) -> LocalityReport:
    """Locality of ``area_saliency`` on the first :data:`VAE_LOCALITY_IMAGES` of ``images``:
    :func:`~model_store.locality.area_locality` with its defaults (4 random 8x8 boxes per image, box seed 0, growths
    0/4/8/16 px). ``tests/engine/test_vae_shapes.py`` asserts the issue's bars on this same call."""
    return area_locality(VAEExplainer(vae), images[:VAE_LOCALITY_IMAGES])


# ---------------------------------------------------------------------------------------------------- contact sheet


def contact_sheet(
    explainer: Explainer,
    batch: data.Batch,
    methods: Sequence[str],
    layer: str,
    recon: Tensor | None,
    path: Path,
) -> None:
    """Write a PNG: per row an example; columns image+box, each method's overlay, and the VAE reconstruction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    x = data.to_tensor(batch.images)
    labels = [int(v) for v in batch.labels]
    results = explainer.explain(x, methods=tuple(methods), layers=(layer,), targets=labels)
    cols = 1 + len(methods) + (recon is not None)
    fig, axes = plt.subplots(len(batch), cols, figsize=(1.6 * cols, 1.7 * len(batch)), squeeze=False)
    for r, expl in enumerate(results):
        img = batch.images[r]
        box = batch.boxes[r]
        pred = expl.predictions[0]
        panels: list[tuple[str, np.ndarray | None, tuple[int, int] | None]] = [
            (f"{data.SHAPE_CLASSES[labels[r]]}\npred {pred.label or pred.class_id} {pred.score:.2f}", None, None)
        ]
        for m in methods:
            key = expl.key(m, layer if get_method(m).scope == "layer" else None, labels[r])
            heat = heatmap(expl, key.method, key.layer, key.target)
            hit = pointing_hit(heat, box)
            peak = divmod(int(torch.argmax(heat)), heat.shape[-1]) if hit is not None else None
            lo, hi = float(heat.min()), float(heat.max())
            scaled = ((heat - lo) / (hi - lo) if hi > lo else torch.zeros_like(heat)).cpu().numpy()
            panels.append((f"{m}{' ✓' if hit else ' ✗'}", scaled, peak))
        for c, (title, norm, peak) in enumerate(panels):
            ax = axes[r][c]
            if norm is None:
                ax.imshow(img)
            else:
                ax.imshow(img.mean(-1), cmap="gray", vmin=0, vmax=255)
                ax.imshow(norm, cmap="inferno", alpha=0.6, vmin=0, vmax=1, interpolation="nearest")
                if peak is not None:
                    ax.plot([peak[1]], [peak[0]], marker="+", color="cyan", markersize=8, mew=1.5)
            x0, y0, x1, y1 = (int(v) for v in box)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1))
            ax.set_title(title, fontsize=6)
            ax.axis("off")
        if recon is not None:
            ax = axes[r][cols - 1]
            ax.imshow(recon[r].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
            ax.set_title("VAE reconstruction", fontsize=6)
            ax.axis("off")
    fig.suptitle(f"shapes-classifier: ground-truth box (green), argmax (+), maps on {layer} (bilinear)", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------------- main


def _print_table(scores: dict[tuple[str, str], LocalisationScore], auto_layer: str, chance: float) -> None:
    w = max(16, *(len(method) + 2 for method, _ in scores))
    print(f"\n{'method':<{w}}{'layer':<16}{'pointing':>9}{'energy':>9}{'zero maps':>11}")
    for (method, layer), s in sorted(scores.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        mark = " (auto)" if layer == auto_layer else ""
        print(f"{method:<{w}}{(layer or 'input') + mark:<16}{s.pointing:>9.3f}{s.energy:>9.3f}{s.zero_maps:>11d}")
    print(f"{'chance':<{w + 16}}{chance:>9.3f}{chance:>9.3f}   (mean box area / image area)")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500, help="held-out images for the localisation metrics")
    parser.add_argument("--sanity", type=int, default=100, help="images for the randomisation sanity check")
    parser.add_argument("--examples", type=int, default=6, help="rows of the contact sheet")
    parser.add_argument("--sheet", type=Path, default=Path("out/localisation.png"), help="contact sheet PNG path")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core host)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.sanity < 1 or args.examples < 1:
        parser.error("--images, --sanity and --examples must be positive")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    batch = data.make_batch("test", EVAL_START, args.images)
    x = data.to_tensor(batch.images)
    model = zoo.build("shapes-classifier")
    with torch.no_grad():
        acc = float((model(x).argmax(1) == torch.from_numpy(batch.labels)).float().mean())
    print(f"held-out images: {len(batch)} (test split indices {EVAL_START}..{EVAL_START + len(batch) - 1})")
    print(f"shapes-classifier accuracy: {acc:.4f}")
    vae = zoo.build("shapes-vae")
    mse, recon = evaluate_vae(vae, x)  # type: ignore[arg-type]
    print(f"shapes-vae reconstruction MSE: {mse:.5f}")
    print("\n".join(vae_area_locality(vae, x).lines()))
    print("\n".join(anomaly.anomaly_report(vae).lines()))  # pixel AUROC of the anomaly maps on defect images

    explainer = Explainer(model, labels=data.SHAPE_CLASSES, input_size=(data.DEFAULT_SIZE, data.DEFAULT_SIZE))
    auto = explainer.default_layers[0]
    layers = tuple(dict.fromkeys((*SWEEP_LAYERS, auto)))
    methods = tuple(m for m in explainer.methods if m != "smoothgrad_integrated_gradients")
    scores = localisation(explainer, batch, methods, layers)
    if "smoothgrad_integrated_gradients" in explainer.methods:
        smooth_ig = localisation(explainer, batch, ("smoothgrad_integrated_gradients",), layers, options=SMOOTH_IG)
        scores.update(smooth_ig)
    b = batch.boxes
    chance = float(np.mean((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))) / (x.shape[-1] * x.shape[-2])
    _print_table(scores, auto, chance)
    skipped = [m for m in available_methods() if m not in explainer.methods]
    print(f"not applicable to shapes-classifier (scored nowhere): {', '.join(skipped) or 'none'}")
    gc = scores[("gradcam", auto)]
    print(f"\nGrad-CAM pointing game on the automatic layer {auto!r}: {gc.pointing:.3f} on {gc.count} images")
    print(f"(smoothgrad_integrated_gradients: {SMOOTH_IG.samples} samples x {SMOOTH_IG.steps} steps)\n")
    shown_ig = min(COMPLETENESS_IMAGES, len(batch))
    names = [f"held-out {EVAL_START + i}" for i in range(shown_ig)]
    labels = [int(v) for v in batch.labels[:shown_ig]]
    report = completeness.completeness("shapes-classifier", explainer, x[:shown_ig], labels, names)
    print("\n".join(report.lines(each=False)))
    print("\n".join(completeness.photographs_report().lines(each=True)))

    print("\nsanity check (Adebayo et al. 2018), Grad-CAM on", repr(auto), "vs randomised weights:")
    sanity_batch = data.make_batch("test", EVAL_START, min(args.sanity, args.images))
    for res in sanity_check(model, sanity_batch, auto):
        print(
            f"  {res.scope:<11} mean Spearman rho {res.mean_rho:+.3f} (constant maps scored 0: {res.constant_maps}/"
            f"{res.count}); over non-constant maps {res.mean_rho_nonconstant:+.3f}"
        )

    shown = data.Batch(
        images=batch.images[: args.examples],
        labels=batch.labels[: args.examples],
        boxes=batch.boxes[: args.examples],
        masks=batch.masks[: args.examples],
        seeds=batch.seeds[: args.examples],
    )
    sheet = ("gradcam", "gradcam++", "hirescam", "eigencam", "cam", "saliency", "guided_backprop")
    sheet_methods = tuple(m for m in sheet if m in explainer.methods)
    contact_sheet(explainer, shown, sheet_methods, auto, recon[: args.examples], args.sheet)
    print(f"\ncontact sheet: {args.sheet}; total {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
