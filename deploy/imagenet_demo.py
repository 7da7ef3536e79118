"""Renders ``demo.png``: for each sample photograph, the served model's top-3 labels and its Grad-CAM, Grad-CAM++,
guided backprop and guided Grad-CAM, drawn with :mod:`camserve.render` from what the server returned.

    python -m deploy.imagenet_demo                      # builds the archive, runs its own server, stops it
    python -m deploy.imagenet_demo --address 127.0.0.1:7070 --token-file .run/key_file.json

Everything goes through the real path: the JPEG files are sent with the client SDK, TorchServe decodes, crops and
explains them, and the pictures show the part of each photo the model saw (its centre crop) at the model's input size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import camserve
from camserve import render
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "model_store" / "samples"  # the photographs, and where demo.png goes
MODEL = "imagenet-efficientnet-lite0"
PHOTOS = ("cat", "espresso", "rocket", "astronaut")
COLUMNS = (("gradcam", "Grad-CAM"), ("gradcam++", "Grad-CAM++"), ("guided_backprop", "guided backprop"),
           ("guided_gradcam", "guided Grad-CAM"))  # fmt: skip
LAYER = "_bn1"
TILE = 168  # px per picture: four rows of five stay under 1 MB as PNG (the gradient images compress poorly)
GAP = 6
TEXT_H = 58  # room for three label lines under the photo


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled font (its wheels carry FreeType)


@contextmanager
def _own_server() -> Iterator[tuple[str, str]]:
    """Builds the archive and starts a TorchServe on free loopback ports (deploy/serverctl.py); stops it after."""
    from deploy import serverctl as ctl
    from model_store import archive

    with tempfile.TemporaryDirectory(prefix="camserve-demo-") as tmp:
        store = Path(tmp) / "archives"
        archive.build(MODEL, store)
        server = ctl.Server.start(
            run_dir=Path(tmp) / "run", model_store=store, models=[MODEL], overrides=ctl.free_port_overrides()
        )
        try:
            keys = server.keys
            if keys is None:
                raise RuntimeError("the demo server runs with token authorization: no keys were written")
            yield server.endpoints.grpc, keys.inference
        finally:
            server.stop()


def _labels_tile(photo: Image.Image, result: camserve.ExplainResult) -> Image.Image:
    """The model's view of the photo with its top-3 labels and scores underneath."""
    tile = Image.new("RGB", (TILE, TILE + TEXT_H), (255, 255, 255))
    tile.paste(photo.resize((TILE, TILE), Image.Resampling.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(tile)
    font = _font(13)
    for i, p in enumerate(result.predictions[:3]):
        draw.text((2, TILE + 3 + 18 * i), f"{p.score:.2f}  {p.label}", fill=(20, 20, 20), font=font)
    return tile


def render_demo(results: Sequence[camserve.ExplainResult], photos: Sequence[Path]) -> Image.Image:
    """One row per photo: its model view with the top-3 labels, then one picture per method; a header row."""
    header_h = 22
    width = GAP + (len(COLUMNS) + 1) * (TILE + GAP)
    height = header_h + len(results) * (TILE + TEXT_H + GAP) + GAP
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font(14)
    titles = ("photo, top-3", *(title for _, title in COLUMNS))
    for col, title in enumerate(titles):
        draw.text((GAP + col * (TILE + GAP), 4), title, fill=(20, 20, 20), font=font)
    for row, (result, path) in enumerate(zip(results, photos, strict=True)):
        y = header_h + row * (TILE + TEXT_H + GAP)
        view = render.model_view(path, result.geometry)
        canvas.paste(_labels_tile(view, result), (GAP, y))
        for col, (method, _) in enumerate(COLUMNS, start=1):
            m = result.map(method, LAYER if method != "guided_backprop" else None)
            picture = render.render_map(
                path, m, geometry=result.geometry, on_original=False, size=TILE, gradients="gradient"
            )
            canvas.paste(picture.resize((TILE, TILE), Image.Resampling.BILINEAR), (GAP + col * (TILE + GAP), y))
    return canvas


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", help="gRPC address of a running camserve server (default: start one)")
    parser.add_argument("--token-file", type=Path, help="its key_file.json (with --address)")
    parser.add_argument("--out", type=Path, default=SAMPLES / "demo.png")
    args = parser.parse_args(argv)
    photos = [SAMPLES / f"{name}.jpg" for name in PHOTOS]

    def explain(address: str, token: str | None, token_file: Path | None) -> list[camserve.ExplainResult]:
        with camserve.Client(address, token=token, token_file=token_file, timeout=300.0) as client:
            results = client.explain(
                [str(p) for p in photos], model=MODEL, methods=[c for c, _ in COLUMNS], layers=[LAYER]
            )
        return [r.raise_for_error() for r in results]

    if args.address:
        results = explain(args.address, None, args.token_file)
    else:
        with _own_server() as (address, token):
            results = explain(address, token, None)
    picture = render_demo(results, photos)
    picture.save(args.out, optimize=True)
    for name, result in zip(PHOTOS, results, strict=True):
        print(name, ", ".join(f"{p.label} {p.score:.3f}" for p in result.predictions[:3]))
    print(f"wrote {args.out} ({picture.width}x{picture.height}, {args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
