"""What looking inside costs: feature maps and consistency checks as ratios to a plain forward, measured side by side.

    .venv/bin/python benchmarks/insight_bench.py [--model resnet50] [--batch 8] [--size 224] [--rounds 5]

Contestants, interleaved with a plain ``inference_mode`` forward in every round (``benchmarks._timing.measure``):
Grad-CAM alone; Grad-CAM + the top 16 channels of its layer by mean activation (expected: the same cost, the
activations are the ones Grad-CAM already captured); + the top 16 by Grad-CAM weight (the same backward pass);
feature maps of two more layers with no method at all (a forward with two hooks); and Grad-CAM with the consistency
check over three transforms (expected: about four Grad-CAMs). One intra-op thread, as the engine benchmark.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _timing import Contestant, measure  # beside this file

from handlers.engine import ConsistencySpec, Explainer, FeatureMapSpec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50", help="a torchvision classification architecture")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)(weights=None).eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    ex = Explainer(model, input_size=(args.size, args.size))
    layer = ex.default_layers[0]
    earlier = [n for n in ex.candidate_layers if n != layer][-2:]

    def forward() -> object:
        with torch.inference_mode():
            return model(x)

    contestants: dict[str, Contestant] = {
        "gradcam": lambda: ex.explain(x, "gradcam"),
        "gradcam + 16 feature maps (mean)": lambda: ex.explain(x, "gradcam", feature_maps=FeatureMapSpec(top_n=16)),
        "gradcam + 16 feature maps (gradcam)": lambda: ex.explain(
            x, "gradcam", feature_maps=FeatureMapSpec(top_n=16, rank="gradcam")
        ),
        f"feature maps only, {len(earlier)} layers": lambda: ex.explain(
            x, (), feature_maps=FeatureMapSpec(layers=tuple(earlier), top_n=16)
        ),
        "gradcam + consistency (3 transforms)": lambda: ex.explain(x, "gradcam", consistency=ConsistencySpec()),
    }
    fwd, ratios = measure(forward, contestants, args.rounds, args.warmup)
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}, CPU, 1 thread; layer {layer!r}")
    print(f"plain forward (inference_mode): {fwd * 1000:.1f} ms (median of {args.rounds})")
    width = max(len(n) for n in ratios)
    for name, ratio in ratios.items():
        print(f"  {name:<{width}}  {ratio:5.2f}x forward")
    base = ratios["gradcam"]
    print(
        f"feature maps (mean) / gradcam alone: {ratios['gradcam + 16 feature maps (mean)'] / base:.2f}x; "
        f"consistency / gradcam alone: {ratios['gradcam + consistency (3 transforms)'] / base:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
