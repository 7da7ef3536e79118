"""Engine benchmark: each explanation as a ratio to a plain ``inference_mode`` forward, beside the libraries.

Run ``.venv/bin/python benchmarks/engine_bench.py`` (full) or ``--quick``; ``--help`` lists the options.

How it measures: for every row ("work"), each round times the plain forward and every contestant once, in an order
that reverses every round (ABBA), so slow drift and load from other processes hit all contestants alike. A
contestant's ratio is the median over rounds of its time divided by that round's forward time. Every contestant
does the same work: the top-1 prediction plus the named maps, on the same model weights and inputs (Captum cannot
predict, so its time includes the plain forward that picks the top-1 class; pytorch-grad-cam gets it from its own
forward; its maps include its cv2 resize to the input, which is its normal output).

Sections: a section is a function that takes the options and yields result rows; decorate it with ``@section(name)``
to add it (e.g. VAE area maps or EfficientNet-Lite0 later) and select with ``--sections``.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import torch
import torchvision
from torch import Tensor, nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _timing import Contestant, measure  # beside this file

from handlers.engine import Explainer


@dataclass
class Options:
    models: list[str]
    batches: list[int]
    size: int
    rounds: int
    warmup: int
    libraries: bool
    sections: list[str]
    only: list[str] = field(default_factory=list)


@dataclass
class Row:
    """One line of the table: a piece of work, each contestant's ratio to the plain forward."""

    section: str
    model: str
    batch: int
    work: str
    forward_s: float
    ratios: dict[str, float] = field(default_factory=dict)


SECTIONS: dict[str, Callable[[Options], Iterator[Row]]] = {}


def section(name: str) -> Callable[[Callable[[Options], Iterator[Row]]], Callable[[Options], Iterator[Row]]]:
    """Register a benchmark section under ``name``."""

    def wrap(fn: Callable[[Options], Iterator[Row]]) -> Callable[[Options], Iterator[Row]]:
        SECTIONS[name] = fn
        return fn

    return wrap


# --------------------------------------------------------------------------------------------- the libraries
def _pgc(cls_name: str, model: nn.Module, layers: list[nn.Module]) -> Callable[[Tensor], tuple[object, Tensor]]:
    import pytorch_grad_cam as pgc

    cam = getattr(pgc, cls_name)(model=model, target_layers=layers)

    def run(x: Tensor) -> tuple[object, Tensor]:
        maps = cam(input_tensor=x, targets=None)  # top-1 from its own forward
        return maps, cam.outputs

    return run


def _pgc_per_layer(model: nn.Module, layers: list[nn.Module]) -> Callable[[Tensor], object]:
    """pytorch-grad-cam's fastest way to per-layer maps: one forward/backward, its per-layer computation."""
    import numpy as np
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = GradCAM(model=model, target_layers=layers)

    def run(x: Tensor) -> object:
        outputs = cam.activations_and_grads(x)
        targets = [ClassifierOutputTarget(int(c)) for c in np.argmax(outputs.detach().numpy(), axis=-1)]
        model.zero_grad()
        sum(t(o) for t, o in zip(targets, outputs, strict=True)).backward()
        return cam.compute_cam_per_layer(x, targets, False)

    return run


def _top1(model: nn.Module, x: Tensor) -> list[int]:
    with torch.inference_mode():
        return model(x).argmax(dim=1).tolist()  # type: ignore[no-any-return]


def _captum(kind: str, model: nn.Module, layer: nn.Module | None) -> Callable[[Tensor, list[int] | None], object]:
    import captum.attr as ca

    if kind == "saliency":
        algo = ca.Saliency(model)
        return lambda x, t: algo.attribute(x, target=t if t is not None else _top1(model, x), abs=False)
    if kind == "guided_backprop":
        gb = ca.GuidedBackprop(model)
        return lambda x, t: gb.attribute(x, target=t if t is not None else _top1(model, x))
    if kind == "deconvnet":
        dc = ca.Deconvolution(model)
        return lambda x, t: dc.attribute(x, target=t if t is not None else _top1(model, x))
    if kind == "gradcam":
        lgc = ca.LayerGradCam(model, layer)
        return lambda x, t: lgc.attribute(x, target=t if t is not None else _top1(model, x), relu_attributions=True)
    if kind == "guided_gradcam":
        ggc = ca.GuidedGradCam(model, layer)
        return lambda x, t: ggc.attribute(
            x, target=t if t is not None else _top1(model, x), interpolate_mode="bilinear"
        )
    raise ValueError(kind)


PGC_NAMES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM"}
CAPTUM_METHODS = ("saliency", "guided_backprop", "deconvnet", "gradcam", "guided_gradcam")
ENGINE_METHODS = (
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "cam",
    "saliency",
    "guided_backprop",
    "deconvnet",
    "guided_gradcam",
)
BUNDLE = ("gradcam", "gradcam++", "saliency", "guided_backprop")
SWEEP = ["layer1", "layer2", "layer3", "layer4"]


def _models(name: str) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Three copies with the same weights: engine, pytorch-grad-cam (trainable, as it calls backward), Captum."""
    torch.manual_seed(0)
    base = getattr(torchvision.models, name)(weights=None).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    pgc_model = copy.deepcopy(base)
    for p in pgc_model.parameters():
        p.requires_grad_(True)
    return base, pgc_model, copy.deepcopy(base)


def _mod(model: nn.Module, name: str) -> nn.Module:
    modules: dict[str, nn.Module] = dict(model.named_modules())
    return modules[name]


def _classifier_works(
    ex: Explainer, pgc_model: nn.Module, cap_model: nn.Module, x: Tensor, libraries: bool
) -> dict[str, dict[str, Contestant]]:
    """Each row's contestants for one model and batch."""
    works: dict[str, dict[str, Contestant]] = {}
    for method in ENGINE_METHODS:
        c: dict[str, Contestant] = {"engine": partial(ex.explain, x, methods=(method,))}
        if libraries and method in PGC_NAMES:
            run = _pgc(PGC_NAMES[method], pgc_model, [_mod(pgc_model, "layer4")])
            c["pytorch-grad-cam"] = partial(run, x)
        if libraries and method in CAPTUM_METHODS:
            cap = _captum(method, cap_model, _mod(cap_model, "layer4"))
            c["captum"] = partial(cap, x, None)
        works[method] = c

    bundle: dict[str, Contestant] = {"engine": lambda: ex.explain(x, methods=BUNDLE)}
    if libraries:
        gc = _pgc("GradCAM", pgc_model, [_mod(pgc_model, "layer4")])
        gcpp = _pgc("GradCAMPlusPlus", pgc_model, [_mod(pgc_model, "layer4")])
        sal = _captum("saliency", cap_model, None)
        gb = _captum("guided_backprop", cap_model, None)

        def libs() -> object:
            _, out = gc(x)
            top1 = out.argmax(dim=1).tolist()
            return gcpp(x), sal(x, top1), gb(x, top1)

        bundle["pytorch-grad-cam+captum"] = libs
    works["bundle: pred+gradcam+gradcam+++saliency+guided"] = bundle

    sweep: dict[str, Contestant] = {"engine": lambda: ex.explain(x, methods=("gradcam",), layers=SWEEP)}
    if libraries:
        per_layer = _pgc_per_layer(pgc_model, [_mod(pgc_model, n) for n in SWEEP])
        sweep["pytorch-grad-cam"] = lambda: per_layer(x)
        caps = [_captum("gradcam", cap_model, _mod(cap_model, n)) for n in SWEEP]

        def cap_sweep() -> object:
            top1 = _top1(cap_model, x)
            return [c(x, top1) for c in caps]

        sweep["captum"] = cap_sweep
    works["sweep: gradcam layer1..layer4"] = sweep

    batch = int(x.shape[0])
    works["top-5: gradcam+saliency"] = {
        "engine": lambda: ex.explain(x, methods=("gradcam", "saliency"), top_k=5),
        "engine 5 calls": lambda: [
            ex.explain(x, methods=("gradcam", "saliency"), targets=[k] * batch) for k in range(5)
        ],
    }
    return works


@section("classifier")
def classifier_section(opts: Options) -> Iterator[Row]:
    """resnet18/resnet50: each method, the full bundle, a 4-layer sweep and top-5; engine vs libraries."""
    for name in opts.models:
        model, pgc_model, cap_model = _models(name)
        ex = Explainer(model, layers="layer4")
        for batch in opts.batches:
            x = torch.randn(batch, 3, opts.size, opts.size, generator=torch.Generator().manual_seed(batch))

            def forward(model: nn.Module = model, x: Tensor = x) -> object:
                with torch.inference_mode():
                    return model(x)

            for work, contestants in _classifier_works(ex, pgc_model, cap_model, x, opts.libraries).items():
                if opts.only and not any(o in work for o in opts.only):
                    continue
                fwd_s, ratios = measure(forward, contestants, opts.rounds, opts.warmup)
                row = Row("classifier", name, batch, work, fwd_s, ratios)
                print(_format(row), flush=True)
                yield row


# --------------------------------------------------------------------------------------------- VAE (issue 4)
@section("vae")
def vae_section(opts: Options) -> Iterator[Row]:
    """shapes-vae at 64x64: area_saliency with 1, 4 and 16 regions per image per strategy (``vae_bench.py``)."""
    import vae_bench  # beside this file

    model, _ = vae_bench.load_vae()
    for r in vae_bench.vae_rows(model, opts.batches, opts.rounds, opts.warmup, measure_fn=measure):
        many = {k: v for k, v in r.ratios.items() if k.endswith("one-region calls")}
        work = r.work + "".join(f"; one call {v / r.ratios['engine']:.2f}x faster than {k}" for k, v in many.items())
        ratios = {k if k.startswith("engine") else f"engine {k}": v for k, v in r.ratios.items()}
        yield Row("vae", "shapes-vae", r.batch, work, r.forward_s, ratios)


# ------------------------------------------------------------------------------ EfficientNet-Lite0 (issue 7)
@section("efficientnet")
def efficientnet_section(opts: Options) -> Iterator[Row]:
    """EfficientNet-Lite0 (the demo's ImageNet model, ReLU6) on the cat photograph at 224: Grad-CAM, guided backprop
    and the served default bundle at layer ``_bn1``, engine vs pytorch-grad-cam and Captum. Captum runs on a copy
    whose ReLU6 modules are an ``nn.ReLU`` subclass (it rewrites only ReLUs), so it does the engine's work."""
    from PIL import Image

    from model_store import imagenet

    class ReLU6AsReLU(nn.ReLU):
        def forward(self, x: Tensor) -> Tensor:
            return torch.nn.functional.relu6(x)

    model = imagenet.build()
    pgc_model = copy.deepcopy(model).requires_grad_(True)
    cap_model = copy.deepcopy(model)
    for parent in list(cap_model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, child_name, ReLU6AsReLU())
    layer = imagenet.DEFAULT_LAYERS[0]
    ex = Explainer(model, layers=imagenet.DEFAULT_LAYERS, input_size=imagenet.INPUT_SIZE)
    with Image.open(imagenet.sample_path("cat")) as img:
        cat, _ = imagenet.preprocessor().from_pil(img.convert("RGB"))
    bundle = "bundle: pred+gradcam+gradcam+++guided+guided_gradcam"
    bundle_methods = ("gradcam", "gradcam++", "guided_backprop", "guided_gradcam")
    gc = _pgc("GradCAM", pgc_model, [_mod(pgc_model, layer)])
    gcpp = _pgc("GradCAMPlusPlus", pgc_model, [_mod(pgc_model, layer)])
    cap_gc = _captum("gradcam", cap_model, _mod(cap_model, layer))
    cap_gb = _captum("guided_backprop", cap_model, None)
    cap_ggc = _captum("guided_gradcam", cap_model, _mod(cap_model, layer))

    def libraries(x: Tensor) -> object:
        _, out = gc(x)
        top1 = out.argmax(dim=1).tolist()
        return gcpp(x), cap_gb(x, top1), cap_ggc(x, top1)

    for batch in opts.batches:
        x = cat.expand(batch, -1, -1, -1).contiguous()

        def forward(x: Tensor = x) -> object:
            with torch.inference_mode():
                return model(x)

        works: dict[str, dict[str, Contestant]] = {
            "gradcam": {"engine": partial(ex.explain, x, methods=("gradcam",))},
            "guided_backprop": {"engine": partial(ex.explain, x, methods=("guided_backprop",))},
            bundle: {"engine": partial(ex.explain, x, methods=bundle_methods)},
        }
        if opts.libraries:
            works["gradcam"]["pytorch-grad-cam"] = partial(gc, x)
            works["gradcam"]["captum"] = partial(cap_gc, x, None)
            works["guided_backprop"]["captum"] = partial(cap_gb, x, None)
            works[bundle]["pytorch-grad-cam+captum"] = partial(libraries, x)
        for work, contestants in works.items():
            fwd_s, ratios = measure(forward, contestants, opts.rounds, opts.warmup)
            row = Row("efficientnet", "effnet-lite0", batch, work, fwd_s, ratios)
            print(_format(row), flush=True)
            yield row


def _format(row: Row) -> str:
    parts = "  ".join(f"{k}={v:.2f}x" for k, v in row.ratios.items())
    return f"{row.model:9s} b{row.batch:<2d} fwd {row.forward_s * 1000:7.1f} ms  {row.work:50s} {parts}"


def _markdown(rows: list[Row], opts: Options, seconds: float) -> str:
    lines = [
        f"Run {datetime.datetime.now().isoformat(timespec='minutes')} on {platform.node()} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads), input {opts.size}x{opts.size}, {opts.rounds} rounds, "
        f"load average at end {os.getloadavg()[0]:.1f}, took {seconds:.0f} s.",
        "",
        "| model | batch | work | forward ms | engine | fastest library | libraries / engine |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        libs = {k: v for k, v in r.ratios.items() if not k.startswith("engine")}
        best = min(libs.items(), key=lambda kv: kv[1]) if libs else None
        engine = r.ratios.get("engine", float("nan"))
        extra = "; ".join(f"{k} {v:.2f}x" for k, v in r.ratios.items() if k.startswith("engine "))
        best_s = f"{best[1]:.2f}x ({best[0]})" if best else "-"
        speed = f"{best[1] / engine:.2f}" if best else "-"
        work = r.work + (f" [{extra}]" if extra else "")
        fwd = f"{r.forward_s * 1000:.0f}"
        lines.append(f"| {r.model} | {r.batch} | {work} | {fwd} | {engine:.2f}x | {best_s} | {speed} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="resnet18 only, batch 1 and 8, 3 rounds")
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-libraries", action="store_true", help="engine only")
    parser.add_argument("--sections", nargs="+", default=["classifier"], choices=sorted(SECTIONS))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared machine a 2-thread pool stalls when another process "
        "holds a core, which made single timings swing 2-3x here)",
    )
    parser.add_argument("--only", nargs="+", default=[], help="run only rows whose work contains one of these")
    parser.add_argument("--markdown", metavar="FILE", help="also append the table to FILE (e.g. RESULTS.md)")
    args = parser.parse_args(argv)
    opts = Options(
        models=["resnet18"] if args.quick else args.models,
        batches=args.batches,
        size=args.size,
        rounds=3 if args.quick else args.rounds,
        warmup=args.warmup,
        libraries=not args.no_libraries,
        sections=args.sections,
        only=args.only,
    )
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = [row for name in opts.sections for row in SECTIONS[name](opts)]
    table = _markdown(rows, opts, time.perf_counter() - start)
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, "a") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
