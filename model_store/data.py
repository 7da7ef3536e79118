"""Procedural "shapes" data set: one shape per image on a cluttered, noisy, textured background.

Every image is a pure function of one integer seed, so a data set is just a range of seeds. Splits own disjoint seed
ranges by construction: ``seed = split_id * SPLIT_STRIDE + index`` with ``0 <= index < SPLIT_STRIDE``, so no index of
one split can ever produce a seed of another.

What an image contains, in drawing order:

* a background of one of five families (:mod:`model_store._textures`): smooth gradients with a soft grating and
  colour noise, hard-edged stripes or checks (axis-aligned, diagonal or any angle), lattices of dots or hatching,
  multi-octave mottled noise, or a nearly flat colour; then soft Gaussian *distractor blobs*, uneven illumination
  and thin scribbles. Hard edges come only as thin or periodic structure, so the object is the only solid shape of
  its scale;
* the object: one of :data:`SHAPE_CLASSES`, with random size (15-35 px at 64 px), position (fully inside the image,
  anywhere) and rotation, anti-aliased by 4x supersampling, painted in one of :data:`STYLES` — filled, gradient,
  striped in a tint of the fill ("textured"), outlined (stroke 1.5 px to a quarter of the radius) or two-tone (fill
  plus a rim) — in colours that stand out from the background under it (:func:`_contrasting`), sometimes with a
  soft drop shadow and one or two thin occluding bars (1-1.5 px) across it;
* the whole image: a Gaussian blur (some images), a colour jitter (gamma, saturation down to grey, contrast,
  brightness; the object's colours are chosen to stand out *after* it) and Gaussian pixel noise of random strength.

The ground truth is the object's visible ink (supersampled coverage >= 0.5, minus what an occluder hides; a shadow is
not part of it) and its bounding box, ``(x0, y0, x1, y1)`` half-open in pixels — the box is computed from the mask,
so the two always agree. The style-shifted evaluation set (:mod:`model_store.shifted`) is drawn by separate code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from model_store._textures import background, random_colour, smooth_noise, square_wave

__all__ = [
    "DEFAULT_SIZE",
    "SHAPE_CLASSES",
    "SPLITS",
    "SPLIT_STRIDE",
    "STYLES",
    "Batch",
    "Sample",
    "make_batch",
    "render",
    "split_seed",
    "to_tensor",
]

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "ring")
"""Class names, in label order."""

SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
"""Split name -> split id; a split owns seeds ``[id * SPLIT_STRIDE, (id + 1) * SPLIT_STRIDE)``."""

SPLIT_STRIDE = 1 << 32
"""Number of seeds (indices) per split."""

DEFAULT_SIZE = 64

_SUPERSAMPLE = 4
_MIN_SIZE = 8
_MIN_OBJECT_FRACTION = 0.24  # object diameter as a share of the image side (64 px -> 15..35 px)
_MAX_OBJECT_FRACTION = 0.55
_MIN_CONTRAST = 0.3  # RGB distance in [0, 1] units (10th percentile over the background pixels under the object)
_MIN_STROKE = 1.5  # px: thinnest outline or rim
_STYLE_WEIGHTS = (0.3, 0.15, 0.15, 0.2, 0.2)
_SHADOW_P, _OCCLUDER_P, _BLUR_P = 0.2, 0.15, 0.35

STYLES: tuple[str, ...] = ("filled", "gradient", "textured", "outlined", "two_tone")
"""How the object is painted (probabilities ``_STYLE_WEIGHTS``)."""


@dataclass(frozen=True)
class Sample:
    """One generated image with its ground truth.

    Attributes:
        image: ``uint8`` array ``[H, W, 3]``.
        label: Index into :data:`SHAPE_CLASSES`.
        box: ``(x0, y0, x1, y1)``, half-open pixel coordinates of the mask's bounding box.
        mask: ``bool`` array ``[H, W]``, True where the object covers at least half of the pixel.
        seed: The seed the sample was rendered from.
    """

    image: np.ndarray
    label: int
    box: tuple[int, int, int, int]
    mask: np.ndarray
    seed: int


@dataclass(frozen=True)
class Batch:
    """Several samples stacked: ``images [N, H, W, 3] uint8``, ``labels [N]``, ``boxes [N, 4]``, ``masks [N, H, W]``."""

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    seeds: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def split_seed(split: str, index: int) -> int:
    """Return the seed of image ``index`` of ``split``.

    Raises:
        ValueError: Unknown split, or ``index`` outside ``[0, SPLIT_STRIDE)``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or not 0 <= index < SPLIT_STRIDE:
        raise ValueError(f"index must be an integer in [0, {SPLIT_STRIDE}), got {index!r}")
    return SPLITS[split] * SPLIT_STRIDE + int(index)


def _check_size(size: int) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < _MIN_SIZE:
        raise ValueError(f"size must be an integer >= {_MIN_SIZE}, got {size!r}")


def _shape_polygon(kind: str, radius: float, angle: float) -> np.ndarray:
    """Vertices ``[K, 2]`` of a polygonal shape centred on the origin with circumradius ``radius``."""
    if kind == "square":
        t = np.arange(4) * (math.pi / 2) + math.pi / 4
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius
    elif kind == "triangle":
        t = np.arange(3) * (2 * math.pi / 3) - math.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius
    elif kind == "star":
        t = np.arange(10) * (math.pi / 5) - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
        pts = np.stack([np.cos(t) * r, np.sin(t) * r], 1)
    elif kind == "cross":
        a, w = radius / math.sqrt(1 + 0.36**2), 0.36  # arm half-length a, half-width w*a; corners on the circle
        h = w * a
        pts = np.array(
            [[h, a], [h, h], [a, h], [a, -h], [h, -h], [h, -a], [-h, -a], [-h, -h], [-a, -h], [-a, h], [-h, h], [-h, a]]
        )
    else:
        raise ValueError(f"{kind!r} is not a polygonal shape")
    c, s = math.cos(angle), math.sin(angle)
    return np.asarray(pts @ np.array([[c, s], [-s, c]]), dtype=np.float64)


def _object_canvas(kind: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """The object's silhouette drawn 4x supersampled: ``bool [size * 4, size * 4]``."""
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    x, y, r = cx * ss, cy * ss, radius * ss
    if kind in ("circle", "ring"):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        if kind == "ring":
            ri = r * 0.55
            draw.ellipse((x - ri, y - ri, x + ri, y + ri), fill=0)
    else:
        pts = _shape_polygon(kind, r, angle) + np.array([x, y])
        draw.polygon([(float(px), float(py)) for px, py in pts], fill=255)
    return np.asarray(canvas) >= 128


def _coverage(hi: np.ndarray, size: int) -> np.ndarray:
    """Supersampled ``bool`` canvas -> anti-aliased coverage ``[size, size]`` in [0, 1]."""
    ss = _SUPERSAMPLE
    return np.asarray(hi.reshape(size, ss, size, ss).mean(axis=(1, 3)), dtype=np.float32)


def _inset(hi: np.ndarray, width: float) -> np.ndarray:
    """The silhouette shrunk by ``width`` pixels (points deeper than ``width`` inside it), supersampled."""
    return np.asarray(ndimage.distance_transform_edt(hi) > width * _SUPERSAMPLE)


def _contour_band(rng: np.random.Generator, hi: np.ndarray, radius: float) -> np.ndarray:
    """Coverage ``[H, W]`` of a band along the silhouette's contour, 1.5 px to a quarter of ``radius`` wide."""
    width = max(_MIN_STROKE, radius * rng.uniform(0.1, 0.25))
    return _coverage(hi & ~_inset(hi, width), hi.shape[0] // _SUPERSAMPLE)


def _scribbles(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Thin random-walk strokes: coverage ``[size, size]`` and one colour per pixel ``[size, size, 3]``."""
    canvas = Image.new("L", (size, size), 0)
    colour_idx = Image.new("L", (size, size), 0)
    draw, cdraw = ImageDraw.Draw(canvas), ImageDraw.Draw(colour_idx)
    n = int(rng.integers(1, 4))
    colours = rng.uniform(0, 1, (n + 1, 3)).astype(np.float32)
    for k in range(n):
        steps = int(rng.integers(4, 9))
        heading = rng.uniform(0, 2 * math.pi)
        turns = np.cumsum(rng.normal(0.0, 0.6, steps)) + heading
        step = size * rng.uniform(0.04, 0.08)
        start = rng.uniform(0, size, 2)
        pts = start + np.concatenate([[[0.0, 0.0]], np.cumsum(np.stack([np.cos(turns), np.sin(turns)], 1) * step, 0)])
        line = [(float(px), float(py)) for px, py in pts]
        draw.line(line, fill=int(rng.integers(110, 200)), width=1)
        cdraw.line(line, fill=k + 1, width=1)
    cov = np.asarray(canvas, dtype=np.float32) / 255.0
    return cov, colours[np.asarray(colour_idx)]


class _ColourJitter:
    """One image's global, pixel-wise colour transform: gamma, saturation (sometimes none: grey), contrast, brightness.

    Drawn before the object so its colours can be chosen to stand out *after* the transform.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        self.gamma = float(np.exp(rng.uniform(-0.4, 0.4)))
        self.saturation = 0.0 if rng.uniform() < 0.1 else float(rng.uniform(0.4, 1.3))
        self.contrast = float(rng.uniform(0.7, 1.2))
        self.brightness = float(rng.uniform(-0.08, 0.08))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = np.clip(rgb, 0.0, 1.0) ** self.gamma
        grey = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = grey[..., None] + (x - grey[..., None]) * self.saturation
        return np.asarray(np.clip(0.5 + (x - 0.5) * self.contrast + self.brightness, 0.0, 1.0), dtype=np.float32)


def _contrasting(
    rng: np.random.Generator, under: np.ndarray, jitter: _ColourJitter, avoid: np.ndarray | None = None
) -> np.ndarray:
    """A colour that stands out, after ``jitter``, from the background pixels ``under`` ``[K, 3]`` (already jittered).

    Scored by the 10th percentile of its distance to ``under`` (so a textured background counts by its pixels near
    the colour, not by its mean), and by its distance to ``avoid`` (another colour of the object) when given; the
    first of up to 64 random colours scoring ``>= _MIN_CONTRAST`` is returned, else the best one.
    """
    avoid_seen = None if avoid is None else jitter(avoid)
    best, best_score = np.zeros(3, np.float32), -1.0
    for _ in range(64):
        colour = random_colour(rng)
        seen = jitter(colour)
        score = float(np.percentile(np.linalg.norm(under - seen, axis=-1), 10))
        if avoid_seen is not None:
            score = min(score, float(np.linalg.norm(seen - avoid_seen)))
        if score >= _MIN_CONTRAST:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


def _paint(
    rng: np.random.Generator, style: str, hi: np.ndarray, radius: float, under: np.ndarray, jitter: _ColourJitter
) -> tuple[np.ndarray, np.ndarray]:
    """The object's ink coverage ``[H, W]`` and colour per pixel ``[H, W, 3]`` in one of :data:`STYLES`."""
    size = hi.shape[0] // _SUPERSAMPLE
    cov = _coverage(hi, size)
    colour = _contrasting(rng, under, jitter)
    shade = 1.0 + smooth_noise(rng, size, 2, 1) * 0.08  # gentle shading so the object is not perfectly flat
    paint = np.broadcast_to(colour, (size, size, 3)) * shade
    if style == "outlined":
        cov = _contour_band(rng, hi, radius)
    elif style == "two_tone":
        rim = _contour_band(rng, hi, radius)
        second = _contrasting(rng, under, jitter, avoid=colour)
        paint = paint * (1 - rim[..., None]) + second * rim[..., None]
    elif style in ("gradient", "textured"):
        if style == "gradient":  # towards a second colour that stands out too
            second = _contrasting(rng, under, jitter, avoid=colour)
        else:  # stripes of a tint of the fill: texture that keeps the silhouette one region (not camouflage)
            second = colour + (random_colour(rng) - colour) * rng.uniform(0.25, 0.45)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        a = rng.uniform(0, 2 * math.pi)
        if style == "gradient":
            u = xx * math.cos(a) + yy * math.sin(a)
            ys, xs = np.nonzero(cov >= 0.5)
            centre = float(np.mean(xs)) * math.cos(a) + float(np.mean(ys)) * math.sin(a)
            t = np.clip(0.5 + (u - centre) / (2 * radius), 0, 1)
        else:  # stripes across the fill
            t = square_wave(xx, yy, a, rng.uniform(3.0, 7.0), 0.0)
        paint = paint * (1 - t[..., None]) + second * t[..., None]
    return cov, np.asarray(np.clip(paint, 0, 1), dtype=np.float32)


def _shadow(rng: np.random.Generator, ink: np.ndarray) -> np.ndarray:
    """A drop shadow's darkening ``[H, W]`` in [0, 1): the ink offset by 1.5-4 px, blurred by 0-2 px."""
    a, d = rng.uniform(0, 2 * math.pi), rng.uniform(1.5, 4.0)
    moved = ndimage.shift(ink, (d * math.sin(a), d * math.cos(a)), order=1, mode="constant")
    soft = ndimage.gaussian_filter(moved, rng.uniform(0.0, 2.0), truncate=2.0)  # from hard-edged to soft
    return np.asarray(np.clip(soft, 0, 1) * rng.uniform(0.3, 0.6), dtype=np.float32)


def _occluder(rng: np.random.Generator, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Coverage ``[H, W]`` of one or two thin (1-1.5 px) bars crossing the object (drawn over it; they cut its mask).

    Thinner than any stroke of the object: a bar as wide as a cross's arm turns a star into a cross."""
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 3))):
        px, py = np.array([cx, cy]) + rng.uniform(-0.6, 0.6, 2) * radius
        a, half = rng.uniform(0, math.pi), radius * rng.uniform(1.0, 1.6)
        dx, dy = math.cos(a) * half, math.sin(a) * half
        width = max(1, round(rng.uniform(1.0, 1.5) * ss))
        draw.line([((px - dx) * ss, (py - dy) * ss), ((px + dx) * ss, (py + dy) * ss)], fill=255, width=width)
    return _coverage(np.asarray(canvas) >= 128, size)


def _render_parts(seed: int, size: int, draw_object: bool = True) -> tuple[np.ndarray, int, np.ndarray]:
    """Render ``seed``: float image in [0, 1] ``[H, W, 3]``, label and mask. ``draw_object=False`` is for tests.

    Every random number is drawn whether or not the object is drawn, so both renders share everything else.
    """
    rng = np.random.default_rng(seed)
    label = int(rng.integers(len(SHAPE_CLASSES)))
    kind = SHAPE_CLASSES[label]
    img, _ = background(rng, size)
    cov_s, col_s = _scribbles(rng, size)
    img = img * (1 - cov_s[..., None]) + col_s * cov_s[..., None]
    jitter = _ColourJitter(rng)
    radius = size * rng.uniform(_MIN_OBJECT_FRACTION, _MAX_OBJECT_FRACTION) / 2
    cx, cy = rng.uniform(radius + 0.5, size - radius - 0.5, 2)
    hi = _object_canvas(kind, size, float(cx), float(cy), float(radius), float(rng.uniform(0, 2 * math.pi)))
    silhouette = _coverage(hi, size)
    style = STYLES[int(rng.choice(len(STYLES), p=_STYLE_WEIGHTS))]
    ink, paint = _paint(rng, style, hi, float(radius), jitter(img[silhouette >= 0.5]), jitter)
    shadow = _shadow(rng, ink) if rng.uniform() < _SHADOW_P else None
    occluder = _occluder(rng, size, float(cx), float(cy), float(radius)) if rng.uniform() < _OCCLUDER_P else None
    occluder_colour = random_colour(rng)
    blur = float(rng.uniform(0.3, 1.0 if style != "outlined" else 0.7)) if rng.uniform() < _BLUR_P else 0.0
    noise = rng.normal(0.0, rng.uniform(0.01, 0.05), img.shape).astype(np.float32)
    if draw_object:
        if shadow is not None:
            img = img * (1 - shadow[..., None])
        img = img * (1 - ink[..., None]) + paint * ink[..., None]
    visible = ink
    if occluder is not None:
        img = img * (1 - occluder[..., None]) + occluder_colour * occluder[..., None]
        visible = ink * (1 - occluder)
    if blur:
        img = ndimage.gaussian_filter(img, (blur, blur, 0), truncate=2.0)
    img = np.clip(jitter(img) + noise, 0.0, 1.0)
    return img, label, visible >= 0.5


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def render(seed: int, size: int = DEFAULT_SIZE) -> Sample:
    """Render the image of ``seed`` at ``size`` x ``size`` pixels (deterministic)."""
    _check_size(size)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    img, label, mask = _render_parts(int(seed), size)
    image = np.round(img * 255.0).astype(np.uint8)
    return Sample(image=image, label=label, box=_box_of(mask), mask=mask, seed=int(seed))


def make_batch(split: str, start: int, count: int, size: int = DEFAULT_SIZE) -> Batch:
    """Render images ``start .. start + count - 1`` of ``split``.

    Raises:
        ValueError: Unknown split, negative ``count``, or indices outside the split's range.
    """
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    _check_size(size)
    split_seed(split, start)
    if count:
        split_seed(split, start + count - 1)
    samples = [render(split_seed(split, start + i), size) for i in range(count)]
    return Batch(
        images=np.stack([s.image for s in samples]) if samples else np.zeros((0, size, size, 3), np.uint8),
        labels=np.array([s.label for s in samples], dtype=np.int64),
        boxes=np.array([s.box for s in samples], dtype=np.int64).reshape(-1, 4),
        masks=np.stack([s.mask for s in samples]) if samples else np.zeros((0, size, size), bool),
        seeds=np.array([s.seed for s in samples], dtype=np.int64),
    )


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` (or one ``[H, W, 3]``) -> float32 ``[N, 3, H, W]`` in [0, 1]."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 [N, H, W, 3] or [H, W, 3], got {images.dtype} {images.shape}")
    arr = images[None] if images.ndim == 3 else images
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
