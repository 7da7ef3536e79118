"""Pictures of explanations, with numpy and pillow only: overlays, gradient images, panels and an HTML gallery.

* :func:`overlay` colours a map with a perceptual colormap (inferno by default, vendored from matplotlib; see
  ``camserve/_colormaps.py``) and blends it over the image. Given the result's :class:`~camserve.Geometry` and the
  original image, the map is placed on the part of the image the model saw (its crop) and the rest is dimmed.
* :func:`gradient_image` shows a 3-channel input-gradient map (guided backprop, deconvnet, guided Grad-CAM) as an
  image: zero is grey, the sign per channel is brighter or darker.
* :func:`panels` lays images side by side with titles; :func:`draw_boxes` outlines regions.
* :func:`gallery` writes one ``index.html`` and its PNGs: per image, a grid of methods x layers for each explained
  class (classifiers), or methods x regions with the region drawn (VAEs).

How each map is shown (:func:`display_kind`): CAM-style maps and saliency (|gradient|, max over channels) as
heat overlays; guided backprop, deconvnet and guided Grad-CAM as gradient images; VAE area maps as heat overlays.
Gradient displays scale by the 99.5th percentile so a few extreme pixels do not wash out the rest.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camserve._colormaps import NAMES as COLORMAPS
from camserve._colormaps import table
from camserve._images import load_rgb
from camserve._results import ExplainResult, Geometry, Map, MapKey, Reduction, normalize_array, resize_array
from camserve.errors import CamserveError

__all__ = [
    "COLORMAPS",
    "GalleryEntry",
    "colorize",
    "colormap",
    "display_kind",
    "draw_boxes",
    "gallery",
    "gradient_image",
    "heat_image",
    "model_view",
    "overlay",
    "panels",
    "render_map",
]

#: Methods whose 3-channel maps read best as gradient images rather than heat.
GRADIENT_IMAGE_METHODS = frozenset({"guided_backprop", "deconvnet", "guided_gradcam"})
#: Percentile used to scale gradient-derived displays (robust to a few extreme pixels).
ROBUST_PERCENTILE = 99.5
BOX_COLOR = (0, 255, 255)
#: Brightness kept outside the model's crop in overlays on the original image.
OUTSIDE_DIM = 0.6


def colormap(name: str = "inferno") -> np.ndarray:
    """The ``(256, 3)`` uint8 table of a vendored perceptual colormap: ``"inferno"`` or ``"viridis"``."""
    return table(name)


def colorize(values: np.ndarray, cmap: str = "inferno", *, normalize: bool = True) -> np.ndarray:
    """Colours a 2-D array: ``H x W x 3`` uint8. Values are min-max normalised first unless ``normalize=False``
    (then they must already lie in [0, 1]; NaN becomes black)."""
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"colorize needs a 2-D array, got shape {v.shape}")
    if normalize:
        v = normalize_array(np.nan_to_num(v))
    index = np.clip(np.nan_to_num(v) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(table(cmap)[index], dtype=np.uint8)


def display_kind(m: Map) -> Literal["overlay", "heat", "gradient"]:
    """How :func:`render_map` shows a map.

    ``"overlay"``: 2-D maps (the CAM family, VAE area Grad-CAM) blended over the image. ``"heat"``: saliency-style
    3-channel maps reduced to ``|g|`` (max over channels), coloured over a dimmed grey image (they are sparse, an
    overlay would hide them). ``"gradient"``: guided backprop, deconvnet and guided Grad-CAM as RGB images.
    """
    if not m.is_gradient:
        return "overlay"
    return "gradient" if m.method in GRADIENT_IMAGE_METHODS else "heat"


def _heat(heatmap: Map | np.ndarray, reduction: Reduction) -> np.ndarray:
    """A 2-D map in [0, 1]: gradient maps reduced and scaled robustly, CAM maps min-max normalised."""
    m = heatmap if isinstance(heatmap, Map) else Map("", "", 0, np.asarray(heatmap, dtype=np.float32))
    if m.array.ndim not in (2, 3):
        raise ValueError(f"a heatmap is [H, W] or [3, H, W], got shape {m.shape}")
    if m.is_gradient:
        v = m.reduce(reduction).array
        positive = v[v > 0]
        scale = float(np.percentile(positive, ROBUST_PERCENTILE)) if positive.size else 1.0
        return np.clip(v / max(scale, 1e-30), 0.0, 1.0)
    return normalize_array(m.array)


def _display_size(width: int, height: int, size: int | None) -> tuple[int, int]:
    """(width, height) with the longer side equal to ``size`` (None: unchanged)."""
    if size is None:
        return width, height
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _resized(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image
    upscale = width > image.width
    return image.resize((width, height), Image.Resampling.BICUBIC if upscale else Image.Resampling.LANCZOS)


def _place(heat: np.ndarray, geometry: Geometry, width: int, height: int) -> np.ndarray:
    """Puts a crop-space map onto a ``height x width`` view of the original image (NaN outside the crop)."""
    orig_h, orig_w = geometry.original_size
    sx, sy = width / orig_w, height / orig_h
    box = geometry.crop
    x0, y0 = round(box.x0 * sx), round(box.y0 * sy)
    x1, y1 = max(round(box.x1 * sx), x0 + 1), max(round(box.y1 * sy), y0 + 1)
    resized = resize_array(heat, (y1 - y0, x1 - x0))
    canvas = np.full((height, width), np.nan, dtype=np.float32)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = resized[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return canvas


def overlay(
    image: object,
    heatmap: Map | np.ndarray,
    *,
    geometry: Geometry | None = None,
    alpha: float = 0.8,
    cmap: str = "inferno",
    reduction: Reduction = "abs_max",
    size: int | None = None,
) -> Image.Image:
    """Blends a coloured map over its image.

    Args:
        image: The image the map explains: a path, bytes, PIL image or numpy array (files get their EXIF
            orientation applied, like on the server).
        heatmap: A :class:`~camserve.Map` or an array (``[H, W]``, or ``[3, H, W]`` reduced with ``reduction``).
        geometry: The result's geometry. With it, ``image`` is the original you sent and the map is placed on the
            crop the model saw (outside is dimmed); without it, the map is stretched over the whole image (right
            for images the size of the model input, or when no crop happened).
        alpha: Weight of the colour where the map is highest, 0..1; it falls linearly with the map's value,
            so low-scoring areas keep the image's own colours.
        cmap: ``"inferno"`` or ``"viridis"``.
        reduction: For 3-channel maps: ``"abs_max"``, ``"positive"``, ``"negative"`` or ``"luminance"``.
        size: Longer side of the output in pixels (None: the image's size).

    Returns:
        An RGB PIL image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = load_rgb(image)
    width, height = _display_size(base.width, base.height, size)
    base = _resized(base, width, height)
    heat = _heat(heatmap, reduction)
    placed = _place(heat, geometry, width, height) if geometry is not None else resize_array(heat, (height, width))
    inside = np.isfinite(placed)
    color = colorize(np.where(inside, placed, 0.0), cmap, normalize=False).astype(np.float32)
    pixels = np.asarray(base, dtype=np.float32)
    # The colour's weight follows the map's value, so where the map is low the image shows through unchanged
    # (a dark colormap end at a constant weight would only darken the picture).
    weight = alpha * np.clip(np.where(inside, placed, 0.0), 0.0, 1.0)[..., None]
    blended = (1.0 - weight) * pixels + weight * color
    # Pixels the model never saw stay visible but dimmed, so the crop is obvious.
    out = np.where(inside[..., None], blended, pixels * OUTSIDE_DIM)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def gradient_image(
    m: Map, *, sign: Literal["all", "positive", "negative", "absolute"] = "all", size: int | None = None
) -> Image.Image:
    """A 3-channel gradient map as an RGB image (see :meth:`camserve.Map.rgb`), robustly scaled."""
    rgb = m.rgb(sign, percentile=ROBUST_PERCENTILE)
    image = Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8))
    width, height = _display_size(image.width, image.height, size)
    return _resized(image, width, height)


def heat_image(
    image: object,
    heatmap: Map | np.ndarray,
    *,
    cmap: str = "inferno",
    reduction: Reduction = "abs_max",
    size: int | None = None,
) -> Image.Image:
    """A sparse map (e.g. saliency) coloured over a dimmed grey copy of ``image`` (same size as the map's input).

    The colour's weight is the map's value, so strong evidence stands out and the grey image gives just enough
    context to see where it lies.
    """
    base = load_rgb(image).convert("L").convert("RGB")
    width, height = _display_size(base.width, base.height, size)
    base = _resized(base, width, height)
    heat = resize_array(_heat(heatmap, reduction), (height, width))
    color = colorize(heat, cmap, normalize=False).astype(np.float32)
    weight = np.clip(heat, 0.0, 1.0)[..., None]
    out = (1.0 - weight) * np.asarray(base, dtype=np.float32) * 0.5 + weight * color
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def render_map(
    image: object,
    m: Map,
    *,
    geometry: Geometry | None = None,
    on_original: bool = True,
    cmap: str = "inferno",
    alpha: float = 0.8,
    size: int | None = None,
    boxes: Sequence[tuple[int, int, int, int]] = (),
) -> Image.Image:
    """One picture of one map, the way :func:`display_kind` says; what the CLI and the gallery write.

    Args:
        image: The image as sent.
        m: The map.
        geometry: The result's geometry (maps cover the model's crop of ``image``).
        on_original: Overlays go on the whole original image (crop placed by ``geometry``, rest dimmed); when
            False, or for heat and gradient pictures, the picture shows the model's view (its crop, resized).
        cmap: Colormap.
        alpha: Overlay weight at the map's maximum.
        size: Longer side in pixels.
        boxes: Boxes to outline, in model-input pixels (VAE regions); drawn on model-view pictures only.
    """
    kind = display_kind(m)
    if kind == "gradient":
        picture = gradient_image(m, size=size)
        view_w = m.size[1]
    elif kind == "heat":
        view = model_view(image, geometry)
        picture = heat_image(view, m, cmap=cmap, size=size)
        view_w = view.width
    elif on_original:
        return overlay(image, m, geometry=geometry, alpha=alpha, cmap=cmap, size=size)
    else:
        view = model_view(image, geometry)
        picture = overlay(view, m, alpha=alpha, cmap=cmap, size=size)
        view_w = view.width
    if boxes:
        picture = draw_boxes(picture, boxes, scale=picture.width / view_w)
    return picture


def model_view(image: object, geometry: Geometry | None, *, size: int | None = None) -> Image.Image:
    """The part of the original image the model saw (its crop), at the model's input size or ``size``."""
    base = load_rgb(image)
    if geometry is not None:
        box = geometry.crop
        base = base.crop((box.x0, box.y0, box.x1, box.y1))
        in_h, in_w = geometry.input_size
        if in_h and in_w:
            base = base.resize((in_w, in_h), Image.Resampling.BILINEAR)
    width, height = _display_size(base.width, base.height, size)
    return _resized(base, width, height)


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[tuple[int, int, int, int]],
    *,
    scale: float = 1.0,
    labels: Sequence[str] | None = None,
    color: tuple[int, int, int] = BOX_COLOR,
    width: int = 2,
) -> Image.Image:
    """A copy of ``image`` with half-open boxes ``(x0, y0, x1, y1)`` outlined (coordinates times ``scale``)."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(12)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        rect = (x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1)
        draw.rectangle(rect, outline=(0, 0, 0), width=width + 2)
        draw.rectangle(rect, outline=color, width=width)
        if labels is not None and i < len(labels):
            draw.text(
                (rect[0] + 3, rect[1] + 2), labels[i], fill=color, font=font, stroke_width=2, stroke_fill=(0, 0, 0)
            )
    return out


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError, ValueError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def panels(
    images: Sequence[Image.Image],
    titles: Sequence[str] | None = None,
    *,
    height: int | None = None,
    gap: int = 8,
    background: tuple[int, int, int] = (255, 255, 255),
    font_size: int = 14,
) -> Image.Image:
    """Images side by side (scaled to one height) with a title above each; returns one RGB image."""
    if not images:
        raise ValueError("panels needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    h = height or max(im.height for im in images)
    scaled = [_resized(im.convert("RGB"), max(1, round(im.width * h / im.height)), h) for im in images]
    font = _font(font_size)
    title_h = font_size + 10 if titles else 0
    total_w = sum(im.width for im in scaled) + gap * (len(scaled) + 1)
    canvas = Image.new("RGB", (total_w, h + title_h + 2 * gap), background)
    draw = ImageDraw.Draw(canvas)
    x = gap
    for i, im in enumerate(scaled):
        if titles:
            draw.text((x, gap), _fit(draw, titles[i], font, im.width), fill=(20, 20, 20), font=font)
        canvas.paste(im, (x, gap + title_h))
        x += im.width + gap
    return canvas


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """Shortens ``text`` with an ellipsis until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


# ---- gallery ----


@dataclass(frozen=True)
class GalleryEntry:
    """One image for :func:`gallery`.

    Attributes:
        name: A title (e.g. the file name).
        image: The image as sent (path, bytes, PIL image or array).
        result: Its :class:`~camserve.ExplainResult`.
        regions: VAE boxes ``(x0, y0, x1, y1)`` in model-input pixels, in request order (map target = index).
    """

    name: str
    image: object
    result: ExplainResult
    regions: Sequence[tuple[int, int, int, int]] = field(default_factory=tuple)


def colorbar(cmap: str = "inferno", width: int = 256, height: int = 12) -> Image.Image:
    """A horizontal strip of the colormap, low values on the left (the gallery's legend)."""
    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    return Image.fromarray(colorize(ramp, cmap, normalize=False))


def _slug(text: str) -> str:
    text = text.replace("+", "p")  # gradcam++ -> gradcampp, distinct from gradcam
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; background: #f6f6f6; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin: 0 0 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
section { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 14px 18px; margin: 18px 0; }
.legend { font-size: 13px; color: #555; } .legend img { display: inline-block; vertical-align: middle; margin: 0 6px; }
.preds { color: #444; font-size: 14px; margin: 0 0 10px; }
.row { display: flex; gap: 14px; flex-wrap: wrap; align-items: flex-start; }
figure { margin: 0; text-align: center; } figcaption { font-size: 12px; color: #555; margin-top: 3px; }
table { border-collapse: collapse; } td { padding: 4px; vertical-align: top; }
th { font-size: 12px; font-weight: 600; color: #333; padding: 4px 8px; } th.rowhead { text-align: right; }
img { display: block; border-radius: 3px; }
.error { color: #b00020; font-weight: 600; } .meta { color: #777; font-size: 12px; margin-top: 8px; }
"""

_LEGEND = (
    "Overlays and heat maps: {bar} low → high (each map scaled to its own range). Gradient images (guided "
    "backprop, deconvnet, guided Grad-CAM): grey is zero, brighter/darker is positive/negative per colour channel."
)


def gallery(
    entries: Iterable[GalleryEntry],
    out_dir: str | Path,
    *,
    title: str = "camserve explanations",
    cmap: str = "inferno",
    alpha: float = 0.8,
    size: int = 224,
) -> Path:
    """Writes an HTML page with PNGs a person can open: ``out_dir/index.html`` and ``out_dir/gallery/...``.

    Per image: the original (the model's crop outlined), the model's input (VAE regions drawn) and the
    reconstruction (VAEs); then, for classifiers, one table per explained class with methods as rows and layers
    as columns ("input" for input-level methods), maps overlaid on the whole original; for VAEs, one table of
    methods x regions on the model's input, each region outlined. Images that failed show their error.

    ``entries`` may be a generator (e.g. over ``explain_many``): each entry is rendered and written as it comes,
    so memory does not grow with the number of images.

    Args:
        entries: The images and their results.
        out_dir: Folder to write into (created; earlier gallery files are overwritten).
        title: Page title.
        cmap: Colormap of overlays and heat maps.
        alpha: Overlay weight at a map's maximum.
        size: Longer side of every picture in pixels (small model inputs are scaled up to it).

    Returns:
        The path of ``index.html``.
    """
    root = Path(out_dir)
    assets = root / "gallery"
    assets.mkdir(parents=True, exist_ok=True)
    colorbar(cmap).save(assets / "colorbar.png")
    bar = "<img src='gallery/colorbar.png' width='256' height='12' alt='colormap, low to high'>"
    index = root / "index.html"
    partial = root / ".index.html.part"
    with partial.open("w", encoding="utf-8") as page_file:
        page_file.write(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p class='legend'>{_LEGEND.format(bar=bar)}</p>\n"
        )
        for n, entry in enumerate(entries):
            folder = assets / _slug(f"{n:03d}_{Path(entry.name).stem if entry.name else 'image'}")
            folder.mkdir(exist_ok=True)
            page_file.write(_entry_html(entry, _Page(folder, root), cmap=cmap, alpha=alpha, size=size) + "\n")
        page_file.write("</body></html>\n")
    partial.replace(index)  # a reader never sees a half-written page
    return index


class _Page:
    """Saves one entry's pictures under unique file names and returns their HTML figures."""

    def __init__(self, folder: Path, root: Path) -> None:
        self.folder = folder
        self.root = root
        self.names: set[str] = set()

    def figure(self, image: Image.Image, name: str, caption: str) -> str:
        stem = _slug(name)
        while stem in self.names:
            stem += "_"
        self.names.add(stem)
        path = self.folder / f"{stem}.png"
        image.save(path, format="PNG", optimize=True)
        src = html.escape(path.relative_to(self.root).as_posix())
        alt = html.escape(caption)
        return (
            f"<figure><img src='{src}' width='{image.width}' height='{image.height}' alt='{alt}'>"
            f"<figcaption>{alt}</figcaption></figure>"
        )


def _caption(m: Map) -> str:
    return f"{m.method} · {'x'.join(str(d) for d in m.shape)}"


def _entry_html(entry: GalleryEntry, page: _Page, *, cmap: str, alpha: float, size: int) -> str:
    result, g = entry.result, entry.result.geometry
    out = [f"<section><h2>{html.escape(entry.name)}</h2>"]
    if result.error is not None:
        e = result.error
        where = f" (field {e.field})" if e.field else ""
        try:  # the image may be what failed: show it only if it can be read
            original = load_rgb(entry.image)
            shown = _resized(original, *_display_size(original.width, original.height, size))
            out.append(f"<div class='row'>{page.figure(shown, 'original', 'original')}</div>")
        except CamserveError:
            pass
        out.append(f"<p class='error'>{html.escape(f'{type(e).__name__}: {e.message}{where}')}</p></section>")
        return "\n".join(out)
    original = load_rgb(entry.image)
    shown = _resized(original, *_display_size(original.width, original.height, size))
    if result.predictions:
        top = ", ".join(f"{html.escape(p.label or str(p.class_id))} {p.score:.3f}" for p in result.predictions[:3])
        out.append(f"<p class='preds'>top predictions: {top}</p>")
    row = []
    full = g is None or g.crop.as_tuple() == (0, 0, g.original_size[1], g.original_size[0])
    if full:
        row.append(page.figure(shown, "original", "original"))
    else:
        assert g is not None  # for type checkers: `full` is True when g is None
        outlined = draw_boxes(shown, [g.crop.as_tuple()], scale=shown.width / original.width, color=(255, 255, 255))
        row.append(page.figure(outlined, "original", "original, model's crop outlined"))
    vae = bool(entry.regions) or result.reconstruction is not None or not result.predictions
    view = model_view(entry.image, g, size=size)
    in_w = g.input_size[1] if g is not None and g.input_size[1] else view.width
    labels = [f"R{i}" for i in range(len(entry.regions))]
    if vae:
        boxed = draw_boxes(view, entry.regions, scale=view.width / in_w, labels=labels) if entry.regions else view
        row.append(page.figure(boxed, "input", "model input" + (", regions" if entry.regions else "")))
    if result.reconstruction is not None:
        rec_array = np.clip(result.reconstruction, 0.0, 1.0) * 255.0 + 0.5
        rec = _resized(Image.fromarray(rec_array.astype(np.uint8)), view.width, view.height)
        if entry.regions:
            rec = draw_boxes(rec, entry.regions, scale=rec.width / result.reconstruction.shape[1], labels=labels)
        row.append(page.figure(rec, "reconstruction", "reconstruction"))
    out.append(f"<div class='row'>{''.join(row)}</div>")
    if vae:
        out.append(_vae_table(entry, page, cmap=cmap, alpha=alpha, size=size))
    else:
        out.extend(_classifier_tables(entry, page, cmap=cmap, alpha=alpha, size=size))
    t = result.timing
    meta = f"model {result.model_name} · server explain {t.explain_ms:.0f} ms · round trip {t.round_trip_ms:.0f} ms"
    out.append(f"<p class='meta'>{html.escape(meta)}</p></section>")
    return "\n".join(out)


def _classifier_tables(entry: GalleryEntry, page: _Page, *, cmap: str, alpha: float, size: int) -> list[str]:
    result = entry.result
    labels = {p.class_id: p for p in result.predictions}
    out = []
    for target in result.targets:
        p = labels.get(target)
        name = f"{p.label or 'class'} ({target}), score {p.score:.3f}" if p else f"class {target}"
        out.append(f"<h3>explaining {html.escape(name)}</h3>")
        layers = result.layers
        head = "".join(f"<th>{html.escape(layer or 'input')}</th>" for layer in layers)
        rows = []
        for method in result.methods:
            by_layer = {k.layer: m for k, m in result.maps.items() if k.method == method and k.target == target}
            if not by_layer:
                continue
            cells = []
            for layer in layers:
                m = by_layer.get(layer)
                if m is None:
                    cells.append("<td></td>")
                    continue
                picture = render_map(entry.image, m, geometry=result.geometry, cmap=cmap, alpha=alpha, size=size)
                stem = f"{method}_{layer or 'input'}_t{target}"
                cells.append(f"<td>{page.figure(picture, stem, _caption(m))}</td>")
            rows.append(f"<tr><th class='rowhead'>{html.escape(method)}</th>{''.join(cells)}</tr>")
        out.append(f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>")
    return out


def _vae_table(entry: GalleryEntry, page: _Page, *, cmap: str, alpha: float, size: int) -> str:
    result = entry.result
    regions = result.targets
    head = "".join(
        f"<th>region R{r}{html.escape(f' {tuple(entry.regions[r])}' if r < len(entry.regions) else '')}</th>"
        for r in regions
    )
    rows = []
    # One row per (method, layer): area Grad-CAM may be asked for at several encoder layers.
    for method, layer in dict.fromkeys((k.method, k.layer) for k in result.maps):
        cells = []
        for r in regions:
            m = result.maps.get(MapKey(method, layer, r))
            if m is None:
                cells.append("<td></td>")
                continue
            boxes = [tuple(entry.regions[r])] if r < len(entry.regions) else []
            picture = render_map(
                entry.image,
                m,
                geometry=result.geometry,
                on_original=False,
                cmap=cmap,
                alpha=alpha,
                size=size,
                boxes=boxes,  # type: ignore[arg-type]
            )
            stem = f"{method}_{layer or 'input'}_r{r}"
            cells.append(f"<td>{page.figure(picture, stem, _caption(m))}</td>")
        title = f"{method} · {layer}" if layer else method
        rows.append(f"<tr><th class='rowhead'>{html.escape(title)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"
