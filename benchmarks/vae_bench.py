"""VAE area-map benchmark: explain calls with 1, 4 and 16 regions per image as ratios to one plain VAE forward.

Run ``.venv/bin/python benchmarks/vae_bench.py`` (``--help`` for options); ``benchmarks/engine_bench.py --sections
vae`` runs the same rows beside the classifier table.

What it measures, on ``shapes-vae`` (the committed weights; a seeded random ``ShapesVAE`` when they are missing) at
64x64: for each batch size and each region count R, one ``VAEExplainer.explain`` call with R random 8x8 boxes per
image (``area_saliency``), under each region strategy: ``engine`` (the default: one forward, vmapped
``is_grads_batched`` backward passes of at most 8 rows each), ``batched-all`` (one vmapped backward for all
regions), ``replicate`` (the input repeated R times, one forward and one backward over the copies) and ``loop`` (one
forward, one backward per region slot), and for R > 1 the same maps from R one-region calls. Every round times the
plain ``inference_mode`` forward and every contestant once, in an order that reverses every round (ABBA), so drift
and other processes' load hit all alike; a ratio is the median over rounds of time / that round's forward time. The
headline is the speedup of one 16-region call over 16 one-region calls (issue 4 asks for >= 2x).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _timing import Contestant, measure  # beside this file

from handlers.engine import Box, VAEExplainer
from model_store.locality import random_boxes

Measure = Callable[[Contestant, dict[str, Contestant], int, int], tuple[float, dict[str, float]]]
REGION_COUNTS = (1, 4, 16)


@dataclass
class VaeRow:
    """One piece of work: each contestant's ratio to the plain VAE forward."""

    batch: int
    work: str
    forward_s: float
    ratios: dict[str, float] = field(default_factory=dict)


def load_vae() -> tuple[nn.Module, str]:
    """The trained ``shapes-vae`` if its weights are present, else a seeded random one (same architecture)."""
    try:
        from model_store import zoo

        return zoo.build("shapes-vae"), "shapes-vae (trained)"
    except Exception as exc:  # missing or mismatched weights: still measure the architecture
        from model_store.models import ShapesVAE

        torch.manual_seed(0)
        model = ShapesVAE().eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model, f"ShapesVAE (random weights: {type(exc).__name__})"


#: Contestant label -> VAEExplainer keyword arguments; "engine" is the default configuration.
VARIANTS: dict[str, dict[str, object]] = {
    "engine": {},
    "engine batched-all": {"strategy": "batched", "max_rows": None},
    "engine replicate": {"strategy": "replicate"},
    "engine loop": {"strategy": "loop"},
}


def _one_region_calls(ex: VAEExplainer, x: Tensor, boxes: list[list[Box]], count: int) -> list[object]:
    """The same regions as ``count`` calls of one region per image each."""
    return [ex.explain(x, "area_saliency", [[b[j]] for b in boxes]) for j in range(count)]


def vae_rows(
    model: nn.Module,
    batches: list[int],
    rounds: int,
    warmup: int,
    measure_fn: Measure = measure,
    variants: dict[str, dict[str, object]] | None = None,
    size: int = 64,
) -> list[VaeRow]:
    """Measure every (batch, region count) row; see the module doc."""
    explainers = {
        label: VAEExplainer(model, input_size=(size, size), **kwargs)  # type: ignore[arg-type]
        for label, kwargs in (variants or VARIANTS).items()
    }
    rows: list[VaeRow] = []
    for batch in batches:
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(batch))
        gen = torch.Generator().manual_seed(100 + batch)
        boxes = [random_boxes(max(REGION_COUNTS), 8, (size, size), gen) for _ in range(batch)]

        def forward(x: Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        for count in REGION_COUNTS:
            regions = [b[:count] for b in boxes]
            contestants: dict[str, Contestant] = {}
            for label, ex in explainers.items():
                contestants[label] = partial(ex.explain, x, "area_saliency", regions)
            if count > 1:
                contestants[f"{count} one-region calls"] = partial(
                    _one_region_calls, explainers["engine"], x, boxes, count
                )
            fwd_s, ratios = measure_fn(forward, contestants, rounds, warmup)
            row = VaeRow(batch, f"area_saliency, {count} region(s)/image", fwd_s, ratios)
            print(format_row(row), flush=True)
            rows.append(row)
    return rows


def format_row(row: VaeRow) -> str:
    parts = "  ".join(f"{k}={v:.2f}x" for k, v in row.ratios.items())
    many = [v for k, v in row.ratios.items() if k.endswith("one-region calls")]
    speed = f"  => one call {many[0] / row.ratios['engine']:.2f}x faster" if many else ""
    return f"shapes-vae b{row.batch:<2d} fwd {row.forward_s * 1000:6.2f} ms  {row.work:34s} {parts}{speed}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0 = torch's default; 1 is steadiest on a busy 2-core host)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, what = load_vae()
    print(f"{what}, torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f}")
    vae_rows(model, args.batches, args.rounds, args.warmup)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
