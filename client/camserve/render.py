"""Pictures of explanations, with numpy and pillow only: overlays, heat and gradient pictures, panels, boxes.

* :func:`overlay` colours a map with a perceptual colormap (inferno by default, vendored from matplotlib; see
  ``camserve/_colormaps.py``) and blends it over the image. Given the result's :class:`~camserve.Geometry` and the
  original image, the map is placed on the part of the image the model saw (its crop) and the rest is dimmed.
* :func:`heat_image` colours a sparse map (an input gradient reduced to ``|g|``) over a dimmed grey image.
* :func:`gradient_image` shows a 3-channel input-gradient map as an RGB image: zero is grey, the sign per channel
  is brighter or darker.
* :func:`panels` lays images side by side with titles; :func:`draw_boxes` outlines regions.

How :func:`render_map` shows a map follows from its shape alone (:func:`display_kind`), never from its method's
name: ``[H, W]`` maps (the CAM family, attention rollout and gradient-weighted attention on a ViT's patch grid, VAE
area Grad-CAM) as overlays; ``[3, H, W]`` input gradients (saliency, guided backprop, deconvnet, guided Grad-CAM, VAE
area saliency) as heat pictures of ``|g|`` by default, as Captum's ``visualize_image_attr`` does, or as gradient
images with ``gradients="gradient"``. Gradient displays scale by the 99.5th percentile so a few extreme pixels do not
wash out the rest. The HTML gallery is :mod:`camserve.gallery`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camserve._colormaps import NAMES as COLORMAPS
from camserve._colormaps import table
from camserve._images import load_rgb
from camserve._maps import Map, Reduction, Sign, normalize_array, resize_array
from camserve._results import Geometry
from camserve.errors import InvalidArgument

__all__ = [
    "COLORMAPS",
    "GradientDisplay",
    "check_style",
    "colorbar",
    "colorize",
    "colormap",
    "display_kind",
    "draw_boxes",
    "gradient_image",
    "heat_image",
    "model_view",
    "overlay",
    "panels",
    "render_map",
]

#: How :func:`render_map` shows 3-channel input-gradient maps: ``"heat"`` (``|g|``) or ``"gradient"`` (signed RGB).
GradientDisplay = Literal["heat", "gradient"]
#: Percentile used to scale gradient-derived displays (robust to a few extreme pixels).
ROBUST_PERCENTILE = 99.5
BOX_COLOR = (0, 255, 255)
#: Brightness kept outside the model's crop in overlays on the original image.
OUTSIDE_DIM = 0.6


def colormap(name: str = "inferno") -> np.ndarray:
    """The ``(256, 3)`` uint8 table of a vendored perceptual colormap: ``"inferno"`` or ``"viridis"``.

    Raises:
        InvalidArgument: Another name.
    """
    return table(name)


def colorize(values: np.ndarray, cmap: str = "inferno", *, normalize: bool = True) -> np.ndarray:
    """Colours a 2-D array: ``H x W x 3`` uint8. Values are min-max normalised first unless ``normalize=False``
    (then they must already lie in [0, 1]; NaN becomes black).

    Raises:
        InvalidArgument: ``values`` is not 2-D, or ``cmap`` is not a vendored colormap.
    """
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 2:
        raise InvalidArgument(f"colorize needs a 2-D array, got shape {v.shape}", field="values")
    if normalize:
        v = normalize_array(np.nan_to_num(v))
    index = np.clip(np.nan_to_num(v) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(table(cmap)[index], dtype=np.uint8)


def display_kind(m: Map, gradients: GradientDisplay = "heat") -> Literal["overlay", "heat", "gradient"]:
    """How :func:`render_map` shows a map, from its shape (what the map declares), whatever its method.

    ``"overlay"``: 2-D maps (the CAM family, VAE area Grad-CAM) blended over the image. 3-channel input gradients
    are shown as ``gradients`` says: ``"heat"`` reduces them to ``|g|`` (max over channels), coloured over a dimmed
    grey image (they are sparse, an overlay would hide them); ``"gradient"`` draws them as RGB images (the usual
    look of guided backprop: zero grey, the sign per channel brighter or darker).

    Raises:
        InvalidArgument: ``gradients`` is neither ``"heat"`` nor ``"gradient"``.
    """
    check_style(gradients=gradients)
    return gradients if m.is_gradient else "overlay"


def check_style(*, cmap: str = "inferno", alpha: float = 0.8, gradients: GradientDisplay = "heat") -> None:
    """Checks drawing options the way every picture here does, so a caller can check them before drawing many.

    Raises:
        InvalidArgument: ``cmap`` is not a vendored colormap, ``alpha`` is outside [0, 1], or ``gradients`` is
            neither ``"heat"`` nor ``"gradient"``.
    """
    table(cmap)
    if not 0.0 <= alpha <= 1.0:
        raise InvalidArgument(f"alpha must be in [0, 1], got {alpha}", field="alpha")
    if gradients not in get_args(GradientDisplay):
        raise InvalidArgument(f"gradients must be 'heat' or 'gradient', got {gradients!r}", field="gradients")


def _heat(heatmap: Map | np.ndarray, reduction: Reduction) -> np.ndarray:
    """A 2-D map in [0, 1]: gradient maps reduced and scaled robustly, CAM maps min-max normalised."""
    m = heatmap if isinstance(heatmap, Map) else Map("", "", 0, np.asarray(heatmap, dtype=np.float32))
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

    Raises:
        InvalidArgument: ``alpha`` outside [0, 1], a map that is not ``[H, W]`` / ``[C, H, W]``, an unknown
            ``cmap`` or ``reduction``, or an image that cannot be read.
    """
    check_style(cmap=cmap, alpha=alpha)
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


def gradient_image(m: Map, *, sign: Sign = "all", size: int | None = None) -> Image.Image:
    """A 3-channel gradient map as an RGB image (see :meth:`camserve.Map.rgb`), robustly scaled.

    Raises:
        InvalidArgument: A 2-D map, or an unknown ``sign``.
    """
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
    gradients: GradientDisplay = "heat",
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
        gradients: How 3-channel input-gradient maps are shown: ``"heat"`` or ``"gradient"`` (RGB).
    """
    kind = display_kind(m, gradients)
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
    """A copy of ``image`` with half-open boxes ``(x0, y0, x1, y1)`` outlined (coordinates times ``scale``).

    A box is drawn as given: one outside the image is clipped, an empty one is a line or a dot. Whether a box is a
    valid VAE region is the server's to say, not the picture's.

    Raises:
        InvalidArgument: A box that is not four finite numbers.
    """
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    font = _font(12)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (v * scale for v in _box_numbers(box, f"boxes[{i}]"))
        left, right, top, bottom = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        rect = (left, top, max(right - 1, left), max(bottom - 1, top))
        draw.rectangle(rect, outline=(0, 0, 0), width=width + 2)
        draw.rectangle(rect, outline=color, width=width)
        if labels is not None and i < len(labels):
            draw.text(
                (rect[0] + 3, rect[1] + 2), labels[i], fill=color, font=font, stroke_width=2, stroke_fill=(0, 0, 0)
            )
    return out


def _box_numbers(box: object, field: str) -> tuple[float, float, float, float]:
    try:
        x0, y0, x1, y1 = (float(v) for v in box)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise InvalidArgument(f"a box is four numbers (x0, y0, x1, y1), got {box!r}", field=field) from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InvalidArgument(f"box coordinates must be finite, got {box!r}", field=field)
    return x0, y0, x1, y1


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
    """Images side by side (scaled to one height) with a title above each; returns one RGB image.

    Raises:
        InvalidArgument: No images, not one title per image, or a negative ``height`` (0 or None: the tallest).
    """
    if not images:
        raise InvalidArgument("panels needs at least one image", field="images")
    if titles is not None and len(titles) != len(images):
        raise InvalidArgument(f"{len(titles)} titles for {len(images)} images", field="titles")
    if height is not None and height < 0:
        raise InvalidArgument(f"height must be a number of pixels, got {height}", field="height")
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


def colorbar(cmap: str = "inferno", width: int = 256, height: int = 12) -> Image.Image:
    """A horizontal strip of the colormap, low values on the left (the gallery's legend).

    Raises:
        InvalidArgument: An unknown ``cmap``, or a ``width`` or ``height`` below 1.
    """
    if width < 1 or height < 1:
        raise InvalidArgument(f"a colorbar is at least 1 x 1 pixels, got {width} x {height}", field="size")
    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    return Image.fromarray(colorize(ramp, cmap, normalize=False))
