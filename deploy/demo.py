"""The demo behind deploy/demo.sh: explanation requests through the camserve SDK for bundled sample images.

    python -m deploy.demo [--run-dir .run] [--out out]

Talks to the server started from ``--run-dir`` (address and key file from there) with ``camserve.Client``:

* ``shapes-classifier``: six images of the demo data set (generated deterministically, saved under
  ``out/inputs/``), Grad-CAM, Grad-CAM++, saliency and guided backprop on the automatic layer;
* ``shapes-vae``: three of them with three regions each (the object's box and two background boxes), the
  model's default area methods, with the reconstruction;
* ``imagenet-efficientnet-lite0``: the photographs in ``model_store/samples/`` with Grad-CAM, Grad-CAM++,
  guided backprop and guided Grad-CAM for the top class, and the top-3 labels.

It writes ``out/index.html`` (the SDK's gallery: every map of every image), one summary picture per model
(``out/<model>.png``: per image its input and the overlays, titled with the top labels) and ``out/summary.json``,
then prints what it wrote and how to call the server yourself. Models the server does not serve are skipped.

``out/insight/index.html`` looks inside ``shapes-classifier`` for three of the images: the eight channels of
``layer1`` and ``layer3`` that Grad-CAM weights most for the top class (feature maps), and the consistency check of
Grad-CAM and saliency under a flip, a shift and a rotation (maps mapped back, Spearman's rho and top-10% IoU).
``out/filters/index.html`` shows its convolution kernels: the stem's as RGB tiles, two deeper layers' as spatial
profiles and connection matrices; ``out/visualize/index.html`` the input that excites each class most (activation
maximisation, three chained bounded requests per class).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import camserve
import camserve.gallery as gallery
import camserve.render as render
from PIL import Image, ImageDraw, ImageFont

from deploy import serverctl

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "model_store" / "samples"

CLASSIFIER = "shapes-classifier"
VAE = "shapes-vae"
IMAGENET = "imagenet-efficientnet-lite0"
CLASSIFIER_METHODS = ("gradcam", "gradcam++", "saliency", "guided_backprop")
INSIGHT_METHODS = ("gradcam", "saliency")
INSIGHT_LAYERS = ("layer1", "layer3")
FILTER_LAYERS = ("stem.0", "layer1.conv1", "layer3.conv2")
IMAGENET_METHODS = ("gradcam", "gradcam++", "guided_backprop", "guided_gradcam")
TIMEOUT = 300.0  # s per call: the first call of a worker on a busy CPU is slow


def shapes_inputs(folder: Path, count: int) -> tuple[list[Path], list[tuple[int, int, int, int]]]:
    """Renders ``count`` demo images (test split) to PNG files; returns their paths and object boxes."""
    from model_store import data

    folder.mkdir(parents=True, exist_ok=True)
    batch = data.make_batch("test", 0, count)
    paths, boxes = [], []
    for i in range(count):
        path = folder / f"shape-{i}-{data.SHAPE_CLASSES[int(batch.labels[i])]}.png"
        Image.fromarray(batch.images[i]).save(path)
        paths.append(path)
        x0, y0, x1, y1 = (int(v) for v in batch.boxes[i])
        boxes.append((x0, y0, x1, y1))
    return paths, boxes


def _heat(result: camserve.ExplainResult, view: Image.Image, method: str, target: int | None = None) -> Image.Image:
    """The map drawn over the model's view of the image (heat overlay, or a gradient image for input gradients)."""
    m = result.map(method, target=target)
    if render.display_kind(m, gradients="gradient") == "gradient":
        return render.gradient_image(m, size=max(view.size))
    return render.overlay(view, m)


def _stack(strips: Sequence[tuple[str, Image.Image]], path: Path) -> Path:
    """Strips one below the other, each under a caption line; saved as PNG."""
    font = ImageFont.load_default(size=15)
    line = 24
    width = max(strip.width for _, strip in strips)
    canvas = Image.new("RGB", (width, sum(strip.height + line for _, strip in strips)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for caption, strip in strips:
        draw.text((8, y + 4), caption, fill=(0, 0, 0), font=font)
        canvas.paste(strip, (0, y + line))
        y += strip.height + line
    canvas.save(path)
    return path


def summary_picture(
    rows: Sequence[tuple[Path, camserve.ExplainResult]], methods: Sequence[str], path: Path, size: int
) -> Path:
    """One strip per image: what the model saw, then each method's map; captioned with the top-3 labels."""
    strips = []
    for image, result in rows:
        if not result.ok:
            strips.append((f"{image.name}: {result.error}", Image.new("RGB", (size, 8), (255, 255, 255))))
            continue
        top3 = " · ".join(f"{p.label} {p.score:.2f}" for p in result.predictions[:3])
        view = render.model_view(image, result.geometry, size=size)
        pictures = [view, *(_heat(result, view, method) for method in methods)]
        strips.append((f"{image.name}:  {top3}", render.panels(pictures, ["model input", *methods])))
    return _stack(strips, path)


def vae_picture(rows: Sequence[tuple[Path, camserve.ExplainResult, list[Any]]], path: Path, size: int) -> Path:
    """Per image: the input with its regions, the reconstruction, then each region's first area map."""
    strips = []
    for image, result, regions in rows:
        if not result.ok:
            strips.append((f"{image.name}: {result.error}", Image.new("RGB", (size, 8), (255, 255, 255))))
            continue
        view = render.model_view(image, result.geometry, size=size)
        scale = size / max(result.geometry.input_size) if result.geometry else 1.0
        pictures, titles = [render.draw_boxes(view, regions, scale=scale)], ["input + regions"]
        if result.reconstruction is not None:
            recon = (result.reconstruction.clip(0, 1) * 255 + 0.5).astype("uint8")  # H x W x 3 in [0, 1]
            pictures.append(Image.fromarray(recon).resize(view.size, Image.Resampling.BILINEAR))
            titles.append("reconstruction")
        method = result.methods[0]
        for r, box in enumerate(regions):
            pictures.append(render.draw_boxes(_heat(result, view, method, target=r), [box], scale=scale))
            titles.append(f"region {r}")
        strips.append((f"{image.name}:  {method} per region (box drawn)", render.panels(pictures, titles)))
    return _stack(strips, path)


def insight_page(client: camserve.Client, paths: Sequence[Path], out: Path) -> Path:
    """The shapes classifier's feature maps and consistency check for ``paths``, as a gallery page."""
    results = client.explain(
        list(paths),
        model=CLASSIFIER,
        methods=INSIGHT_METHODS,
        feature_maps=camserve.FeatureMaps(top_n=8, layers=INSIGHT_LAYERS, rank="gradcam"),
        consistency=True,
    )
    entries = [gallery.Entry(p.name, p, r) for p, r in zip(paths, results, strict=True)]
    return gallery.write(entries, out, title=f"inside {CLASSIFIER}: feature maps and consistency")


def visualize_page(client: camserve.Client, out: Path) -> Path:
    """Activation maximisation of every class of the shapes classifier, as a page."""
    labels = client.describe(CLASSIFIER).labels
    items = []
    for label in labels:
        *_, last = client.visualize_rounds(CLASSIFIER, rounds=3, target=label, steps=150)
        items.append((label, last))
    return gallery.write_visualizations(items, out, title=f"{CLASSIFIER}: activation maximisation")


def _record(name: str, model: str, result: camserve.ExplainResult) -> dict[str, Any]:
    return {
        "image": name,
        "model": model,
        "error": str(result.error) if result.error else None,
        "top": [{"label": p.label, "class_id": p.class_id, "score": round(p.score, 4)} for p in result.predictions[:3]],
        "maps": sorted({f"{m.method}@{m.layer or 'input'}" for m in result}),
        "server_ms": round(result.timing.explain_ms, 1),
        "batch_size": result.timing.batch_size,
    }


def run(address: str, key_file: Path | None, served: Sequence[str], out: Path) -> tuple[list[Path], Path | None]:
    """Sends the demo requests and writes the pictures; returns the files written and one sample image."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    entries: list[gallery.Entry] = []
    records: list[dict[str, Any]] = []
    sample: Path | None = None
    with camserve.Client(address, token_file=key_file, timeout=TIMEOUT) as client:
        if CLASSIFIER in served or VAE in served:
            paths, boxes = shapes_inputs(out / "inputs", 6)
            written += paths
            sample = paths[0]
        if CLASSIFIER in served:
            results = client.explain(paths, model=CLASSIFIER, methods=CLASSIFIER_METHODS)
            entries += [gallery.Entry(p.name, p, r) for p, r in zip(paths, results, strict=True)]
            records += [_record(p.name, CLASSIFIER, r) for p, r in zip(paths, results, strict=True)]
            rows = list(zip(paths, results, strict=True))
            written.append(summary_picture(rows, CLASSIFIER_METHODS, out / f"{CLASSIFIER}.png", 160))
            written.append(insight_page(client, paths[:3], out / "insight"))
            kernels = client.filters(CLASSIFIER, layers=FILTER_LAYERS)
            written.append(gallery.write_filters(kernels, out / "filters", title=f"{CLASSIFIER}: filters"))
            written.append(visualize_page(client, out / "visualize"))
        if VAE in served:
            rows_vae = []
            inputs = []
            for path, box in zip(paths[:3], boxes[:3], strict=True):
                regions = [box, (0, 0, 16, 16), (44, 44, 64, 64)]
                inputs.append(camserve.Input(path, regions=regions))
                rows_vae.append((path, regions))
            results = client.explain(inputs, model=VAE, reconstruction=True)
            entries += [
                gallery.Entry(f"{p.name} (VAE)", p, r, regions=regs)
                for (p, regs), r in zip(rows_vae, results, strict=True)
            ]
            records += [_record(p.name, VAE, r) for (p, _), r in zip(rows_vae, results, strict=True)]
            vae_rows = [(p, r, regs) for (p, regs), r in zip(rows_vae, results, strict=True)]
            written.append(vae_picture(vae_rows, out / f"{VAE}.png", 160))
        if IMAGENET in served:
            photos = sorted(SAMPLES.glob("*.jpg"))
            results = client.explain(photos, model=IMAGENET, methods=IMAGENET_METHODS)
            entries += [gallery.Entry(p.name, p, r) for p, r in zip(photos, results, strict=True)]
            records += [_record(p.name, IMAGENET, r) for p, r in zip(photos, results, strict=True)]
            rows = list(zip(photos, results, strict=True))
            written.append(summary_picture(rows, IMAGENET_METHODS, out / f"{IMAGENET}.png", 224))
            sample = next((p for p in photos if p.stem == "cat"), photos[0] if photos else sample)
    written.append(gallery.write(entries, out, title="camserve demo: predictions and their explanations"))
    summary = out / "summary.json"
    summary.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    written.append(summary)
    for record in records:
        tops = "; ".join(f"{t['label']} {t['score']:.2f}" for t in record["top"]) or "(VAE: no classes)"
        error = f"  ERROR {record['error']}" if record["error"] else ""
        print(f"  {record['model']:<28} {record['image']:<24} {tops}{error}")
    return written, sample


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=ROOT / ".run", help="the running server's run directory")
    parser.add_argument("--out", type=Path, default=ROOT / "out", help="output folder (default: out/)")
    args = parser.parse_args(argv)
    ctl = serverctl
    try:
        server = ctl.Server.attach(args.run_dir)
    except ctl.ServerError as exc:
        print(f"demo: {exc}: start it with bash deploy/start.sh", file=sys.stderr)
        return 1
    print(f"demo: explaining sample images with {server.endpoints.grpc} ({', '.join(server.models)})")
    key_file = server.key_file if server.token_auth else None
    try:
        written, sample = run(server.endpoints.grpc, key_file, server.models, args.out)
    except camserve.CamserveError as exc:
        print(f"demo: the server refused a demo request: {exc}\n{server.log_tail(30)}", file=sys.stderr)
        return 1
    print(f"demo: wrote {len(written)} files under {args.out}/ (open {args.out / 'index.html'}):")
    for path in written:
        print(f"  {path}")
    here = Path.cwd()
    image = str(sample.relative_to(here) if sample and sample.is_relative_to(here) else sample or "image.png")
    model = IMAGENET if IMAGENET in server.models and sample and sample.suffix == ".jpg" else None
    print(ctl.how_to_call(server, image=image, model=model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
