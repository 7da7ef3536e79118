"""Procedural "shapes" data set: one shape per image on a cluttered, noisy, textured background.

Every image is a pure function of one integer seed, so a data set is just a range of seeds. Splits own disjoint seed
ranges by construction: ``seed = split_id * SPLIT_STRIDE + index`` with ``0 <= index < SPLIT_STRIDE``, so no index of
one split can ever produce a seed of another.

What an image contains:

* a textured background: a smooth two-colour gradient, a sinusoidal grating of random period and orientation, low-
  frequency colour noise, and a few soft Gaussian *distractor blobs* and thin scribbles. Distractors have no sharp
  outline and are never one of the classes' shapes, so the object is always the only hard-edged, solid shape;
* the object: one of :data:`SHAPE_CLASSES`, with random colour (kept at a minimum distance from the background under
  it), size, position (fully inside the image) and rotation, anti-aliased by 4x supersampling;
* pixel noise over everything.

The ground truth is the object's mask (supersampled coverage >= 0.5) and its bounding box, ``(x0, y0, x1, y1)``
half-open in pixels — the box is computed from the mask, so the two always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

__all__ = [
    "DEFAULT_SIZE",
    "SHAPE_CLASSES",
    "SPLITS",
    "SPLIT_STRIDE",
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
_MIN_OBJECT_FRACTION = 0.24  # object diameter as a share of the image side (64 px -> 15..32 px)
_MAX_OBJECT_FRACTION = 0.50
_MIN_COLOUR_DISTANCE = 0.35  # Euclidean RGB distance in [0, 1] units between the object and the background under it
_NOISE_SIGMA = 0.03


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


def _object_coverage(kind: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Anti-aliased coverage ``[size, size]`` in [0, 1] of the object, from a 4x supersampled drawing."""
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
    hi = np.asarray(canvas, dtype=np.float32) / 255.0
    return np.asarray(hi.reshape(size, ss, size, ss).mean(axis=(1, 3)), dtype=np.float32)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise ``[size, size, channels]`` in about [-1, 1]: a coarse random grid, bilinearly upsampled."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1, channels))
    pos = np.linspace(0.0, cells, size, endpoint=False) + cells / (2 * size)
    i0 = np.clip(np.floor(pos).astype(int), 0, cells - 1)
    f = (pos - i0)[:, None]
    rows = grid[i0] * (1 - f[:, :, None]) + grid[i0 + 1] * f[:, :, None]  # [size, cells+1, C]
    out = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
    return np.asarray(out, dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Textured, cluttered background ``[size, size, 3]`` float32 in [0, 1] (before pixel noise)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    g = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + (xx - 0.5) * math.cos(g) + (yy - 0.5) * math.sin(g), 0, 1)[..., None]
    img = c0 * (1 - t) + c1 * t
    # grating: random period (in units of the image side), orientation, phase and colour amplitude
    period = rng.uniform(0.16, 0.4)
    o = rng.uniform(0, math.pi)
    wave = np.sin(2 * math.pi * (xx * math.cos(o) + yy * math.sin(o)) / period + rng.uniform(0, 2 * math.pi))
    img = img + wave[..., None] * rng.uniform(0.02, 0.12, 3)
    img = img + _smooth_noise(rng, size, int(rng.integers(3, 7)), 3) * rng.uniform(0.05, 0.15)
    # soft, anisotropic Gaussian distractor blobs: no outline, so never a class shape
    for _ in range(int(rng.integers(2, 6))):
        bx, by = rng.uniform(0, 1, 2)
        sx, sy = rng.uniform(0.03, 0.12, 2)
        a = rng.uniform(0, math.pi)
        dx, dy = xx - bx, yy - by
        u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
        w = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))[..., None] * rng.uniform(0.4, 0.8)
        img = img * (1 - w) + rng.uniform(0, 1, 3) * w
    return np.asarray(np.clip(img, 0, 1), dtype=np.float32)


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


def _object_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour at least ``_MIN_COLOUR_DISTANCE`` from ``under`` (the mean background colour below it)."""
    for _ in range(64):
        colour = rng.uniform(0, 1, 3)
        if np.linalg.norm(colour - under) >= _MIN_COLOUR_DISTANCE:
            return colour.astype(np.float32)
    # the farthest corner of the RGB cube is always >= sqrt(3)/2 away
    return np.where(under < 0.5, 1.0, 0.0).astype(np.float32)


def _render_parts(seed: int, size: int, draw_object: bool = True) -> tuple[np.ndarray, int, np.ndarray]:
    """Render ``seed``: float image in [0, 1] ``[H, W, 3]``, label and mask. ``draw_object=False`` is for tests."""
    rng = np.random.default_rng(seed)
    label = int(rng.integers(len(SHAPE_CLASSES)))
    kind = SHAPE_CLASSES[label]
    img = _background(rng, size)
    cov_s, col_s = _scribbles(rng, size)
    img = img * (1 - cov_s[..., None]) + col_s * cov_s[..., None]
    diameter = size * rng.uniform(_MIN_OBJECT_FRACTION, _MAX_OBJECT_FRACTION)
    radius = diameter / 2
    cx, cy = rng.uniform(radius + 0.5, size - radius - 0.5, 2)
    angle = rng.uniform(0, 2 * math.pi)
    cov = _object_coverage(kind, size, float(cx), float(cy), float(radius), float(angle))
    mask = cov >= 0.5
    colour = _object_colour(rng, img[mask].mean(axis=0))
    shade = 1.0 + _smooth_noise(rng, size, 2, 1) * 0.08  # gentle shading so the object is not perfectly flat
    noise = rng.normal(0.0, _NOISE_SIGMA, img.shape).astype(np.float32)
    if draw_object:
        img = img * (1 - cov[..., None]) + np.clip(colour * shade, 0, 1) * cov[..., None]
    img = np.clip(img + noise, 0.0, 1.0)
    return img, label, mask


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
