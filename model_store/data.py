"""Procedural "shapes" training data: one shape per image, drawn in many styles on many kinds of background.

Every image is a pure function of one integer seed, so a data set is just a range of seeds. Splits own disjoint seed
ranges by construction: ``seed = split_id * SPLIT_STRIDE + index`` with ``0 <= index < SPLIT_STRIDE``, so no index of
one split can ever produce a seed of another.

What an image contains (each factor drawn independently from the seed):

* a background of one of the families in :data:`model_store._textures.BACKGROUNDS` (flat, linear or radial
  gradient, stripes, rotated checkerboard, colour noise, cluttered mix), maybe with soft blobs and thin scribbles
  (distractors without a solid outline of a class shape);
* the object: one of :data:`SHAPE_CLASSES` in one of :data:`STYLES` (filled with gentle shading, outlined with a
  stroke, or textured with a two-colour pattern), with random colour (kept at a minimum distance from the background
  under it), size (24-56 % of the side), position (anywhere fully inside the image, so often off-centre) and
  rotation, anti-aliased by 4x supersampling;
* sometimes an occluder: a thin bar across the object hiding at most a quarter of it;
* colour jitter (channel gains, offset, gamma), sometimes a Gaussian blur, and pixel noise of random strength.

The ground truth is the object's visible mask (supersampled coverage >= 0.5, minus occluded pixels) and its bounding
box, ``(x0, y0, x1, y1)`` half-open in pixels — the box is computed from the mask, so the two always agree.

The style-shifted evaluation set lives in ``model_store.shifted``, with drawing code of its own; training never
imports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from model_store import _textures

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

STYLES: tuple[str, ...] = ("filled", "outlined", "textured")
"""Object drawing styles, drawn with probabilities 1/2, 1/4, 1/4 (see :data:`_STYLE_WEIGHTS`)."""

_SUPERSAMPLE = 4
_MIN_SIZE = 8
_MIN_OBJECT_FRACTION = 0.24  # object diameter as a share of the image side (64 px -> 15..36 px)
_MAX_OBJECT_FRACTION = 0.56
_MIN_COLOUR_DISTANCE = 0.35  # Euclidean RGB distance in [0, 1] units between the object and the background under it
_RING_INNER = 0.55  # inner / outer radius of a ring
_MIN_STROKE = 1.5  # px; an outline is 10-20 % of the radius wide, never thinner than this
_OCCLUDER_PROBABILITY = 0.25
_MAX_OCCLUDED = 0.25  # an occluder may hide at most this share of the object's mask
_MAX_BLUR_SIGMA = 1.0
_BLUR_TRUNCATE = 3  # px: the blur kernel's radius, so the object changes no pixel farther than this from its ink
_MAX_NOISE_SIGMA = 0.06
_STYLE_WEIGHTS = (0.5, 0.25, 0.25)


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


def _object_coverage(
    kind: str, size: int, cx: float, cy: float, radius: float, angle: float, stroke: float = 0.0
) -> np.ndarray:
    """Anti-aliased coverage ``[size, size]`` in [0, 1] of the object, from a 4x supersampled drawing.

    ``stroke > 0`` draws the outline only, ``stroke`` px wide, centred on the contour (a ring: both its circles).
    """
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    x, y, r, w = cx * ss, cy * ss, radius * ss, max(1, round(stroke * ss))
    if kind in ("circle", "ring"):
        radii = (r, r * _RING_INNER) if kind == "ring" else (r,)
        if stroke > 0:
            for rr in radii:
                draw.ellipse((x - rr - w / 2, y - rr - w / 2, x + rr + w / 2, y + rr + w / 2), outline=255, width=w)
        else:
            for rr, fill in zip(radii, (255, 0), strict=False):
                draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=fill)
    else:
        pts = [(float(px), float(py)) for px, py in _shape_polygon(kind, r, angle) + np.array([x, y])]
        if stroke > 0:
            draw.line([*pts, pts[0], pts[1]], fill=255, width=w, joint="curve")
        else:
            draw.polygon(pts, fill=255)
    hi = np.asarray(canvas, dtype=np.float32) / 255.0
    return np.asarray(hi.reshape(size, ss, size, ss).mean(axis=(1, 3)), dtype=np.float32)


def _object_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour whose distance to the background pixels ``under`` ``[K, 3]`` is mostly >= the minimum.

    "Mostly": the 10th percentile of the per-pixel distances, so a stripe or checker background is handled by both
    of its colours. Falls back to the candidate that scored best.
    """
    best, best_score = np.zeros(3, np.float32), -1.0
    for _ in range(48):
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        score = float(np.percentile(np.linalg.norm(under - colour, axis=-1), 10))
        if score >= _MIN_COLOUR_DISTANCE:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


def _occluder(rng: np.random.Generator, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    """Coverage ``[size, size]`` of a bar across the object: long and thin (aspect >= 3), so never a class shape."""
    ss = _SUPERSAMPLE
    canvas = Image.new("L", (size * ss, size * ss), 0)
    a = rng.uniform(0, math.pi)
    half_w = radius * rng.uniform(0.12, 0.25) * ss
    half_l = radius * rng.uniform(1.6, 3.0) * ss
    off = rng.uniform(0.25, 0.9) * radius * ss  # the bar's axis passes off the object's centre
    px, py = cx * ss - off * math.sin(a), cy * ss + off * math.cos(a)
    d, n = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    corners = [
        np.array([px, py]) + sl * half_l * d + sw * half_w * n for sl, sw in ((1, 1), (1, -1), (-1, -1), (-1, 1))
    ]
    ImageDraw.Draw(canvas).polygon([(float(c[0]), float(c[1])) for c in corners], fill=255)
    hi = np.asarray(canvas, dtype=np.float32) / 255.0
    return np.asarray(hi.reshape(size, ss, size, ss).mean(axis=(1, 3)), dtype=np.float32)


def _photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Colour jitter (per-channel gain, offset, gamma), maybe a Gaussian blur, then pixel noise."""
    img = np.clip(img * rng.uniform(0.85, 1.15, 3) + rng.uniform(-0.06, 0.06), 0, 1)
    if rng.uniform() < 0.5:
        img = img ** rng.uniform(0.75, 1.35)
    if rng.uniform() < 0.3:
        sigma = float(rng.uniform(0.4, _MAX_BLUR_SIGMA))
        img = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), truncate=_BLUR_TRUNCATE / sigma, mode="nearest")
    noise = rng.normal(0.0, rng.uniform(0.0, _MAX_NOISE_SIGMA), img.shape)
    return np.asarray(np.clip(img + noise, 0.0, 1.0), dtype=np.float32)


def _render_parts(seed: int, size: int, draw_object: bool = True) -> tuple[np.ndarray, int, np.ndarray]:
    """Render ``seed``: float image in [0, 1] ``[H, W, 3]``, label and mask. ``draw_object=False`` is for tests.

    The mask is the object's *visible ink*: the stroke of an outlined shape, the body of a filled or textured one,
    minus what an occluder hides (kept to at most :data:`_MAX_OCCLUDED` of it).
    """
    rng = np.random.default_rng(seed)
    label = int(rng.integers(len(SHAPE_CLASSES)))
    kind = SHAPE_CLASSES[label]
    img, _ = _textures.background(rng, size)
    if rng.uniform() < 0.5:
        cov_s, col_s = _textures.scribbles(rng, size)
        img = img * (1 - cov_s[..., None]) + col_s * cov_s[..., None]
    diameter = size * rng.uniform(_MIN_OBJECT_FRACTION, _MAX_OBJECT_FRACTION)
    radius = diameter / 2
    style = STYLES[int(rng.choice(len(STYLES), p=_STYLE_WEIGHTS))]
    stroke = max(_MIN_STROKE, radius * rng.uniform(0.1, 0.2)) if style == "outlined" else 0.0
    margin = radius + stroke / 2 + 0.5
    cx, cy = rng.uniform(margin, size - margin, 2)
    angle = rng.uniform(0, 2 * math.pi)
    cov = _object_coverage(kind, size, float(cx), float(cy), float(radius), float(angle), stroke)
    mask = cov >= 0.5
    colour = _object_colour(rng, img[mask])
    if style == "textured":
        fill = _textures.pattern(rng, size, colour, _object_colour(rng, img[mask]))
    else:
        fill = np.clip(colour * (1.0 + _textures.smooth_noise(rng, size, 2, 1) * 0.08), 0, 1)
    if draw_object:
        img = img * (1 - cov[..., None]) + fill * cov[..., None]
    if rng.uniform() < _OCCLUDER_PROBABILITY:
        occ = _occluder(rng, size, float(cx), float(cy), float(radius))
        visible = mask & (occ < 0.5)
        if visible.sum() >= (1 - _MAX_OCCLUDED) * mask.sum():
            img = img * (1 - occ[..., None]) + rng.uniform(0, 1, 3).astype(np.float32) * occ[..., None]
            mask = visible
    return _photometric(rng, img), label, mask


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
