"""The consistency benchmark: do the demo classifier's explanations follow the object when the image moves?

Usage::

    python -m model_store.consistency [--images 200] [--batch 50]

On held-out images (``test`` split from :data:`model_store.evaluate.EVAL_START`, as the localisation benchmark)
every method's map for the ground-truth class is recomputed on a horizontally flipped, a shifted (1/8 of the size,
right and down) and a rotated (15 degrees) copy and mapped back (:class:`handlers.engine.ConsistencySpec`). It
prints, per method and transform, the mean Spearman rank correlation and the mean IoU of the top-10% regions over
the images where both are defined (the count of undefined ones, from constant maps, in brackets), for the trained
classifier and, as a reference, for the same network with every weight re-initialised. Agreement alone proves
little: a random convolutional network is close to shift-equivariant, so its maps (of image edges, not of the
object) follow a shift at least as well; flips and rotations, which the architecture does not build in, separate
the two.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

from handlers.engine import ConsistencySpec, Explainer
from model_store import data, zoo
from model_store.evaluate import EVAL_START, randomised

__all__ = ["METHODS", "agreement_table", "main"]

METHODS = ("gradcam", "gradcam++", "layercam", "saliency", "guided_backprop")


def agreement_table(
    model: nn.Module, batch: data.Batch, methods: Sequence[str], chunk: int
) -> dict[tuple[str, str], tuple[float, float, int]]:
    """``(method, transform) -> (mean Spearman, mean IoU, undefined count)`` over ``batch``, ground-truth targets."""
    explainer = Explainer(model, input_size=(data.DEFAULT_SIZE, data.DEFAULT_SIZE))
    spec = ConsistencySpec()
    sums: dict[tuple[str, str], list[float]] = {}
    for start in range(0, len(batch.labels), chunk):
        x = data.to_tensor(batch.images[start : start + chunk])
        labels = [int(c) for c in batch.labels[start : start + chunk]]
        for result in explainer.explain(x, methods, targets=labels, consistency=spec):
            for a in result.consistency:
                acc = sums.setdefault((a.key.method, a.transform), [0.0, 0.0, 0.0, 0.0])
                if math.isnan(a.spearman) or math.isnan(a.iou):
                    acc[3] += 1
                    continue
                acc[0] += a.spearman
                acc[1] += a.iou
                acc[2] += 1
    return {k: (s / max(n, 1), i / max(n, 1), int(bad)) for k, (s, i, n, bad) in sums.items()}


def _print(title: str, table: dict[tuple[str, str], tuple[float, float, int]], methods: Sequence[str]) -> None:
    transforms = ConsistencySpec().transforms
    print(f"\n{title}")
    print(f"  {'method':<16}" + "".join(f"{t + ' rho / IoU':>24}" for t in transforms))
    for method in methods:
        cells = []
        for t in transforms:
            rho, iou, bad = table[(method, t)]
            cells.append(f"{rho:+.3f} / {iou:.3f}" + (f" [{bad}]" if bad else ""))
        print(f"  {method:<16}" + "".join(f"{c:>24}" for c in cells))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="held-out images")
    parser.add_argument("--batch", type=int, default=50, help="images per engine call")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core host)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.batch < 1:
        parser.error("--images and --batch must be positive")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    batch = data.make_batch("test", EVAL_START, args.images)
    model = zoo.build("shapes-classifier")
    print(f"held-out images: {args.images} (test split indices {EVAL_START}..{EVAL_START + args.images - 1})")
    print("transforms: hflip; shift by 1/8 of the size right and down; rotate 15 degrees; targets: true classes")
    _print("shapes-classifier (trained)", agreement_table(model, batch, METHODS, args.batch), METHODS)
    random = randomised(model, "full")
    _print(
        "the same network, every weight re-initialised", agreement_table(random, batch, METHODS, args.batch), METHODS
    )
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
