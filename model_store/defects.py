"""Held-out shapes images with synthetic defects (scratches, blobs, missing parts) and their ground-truth masks.

The clean images are :func:`model_store.data.make_batch`'s, from the test split only (no model was trained on it);
this module adds one defect to each, deterministically: image ``i`` of a call gets defect kind
``DEFECT_KINDS[i % 3]`` drawn from a generator seeded by the clean image's seed and the kind, so a defect image is a
pure function of its index. The three kinds:

* ``scratch``: a thin straight stroke (1-2 px wide, 12-40 px long) of a random colour, anywhere in the image;
* ``blob``: a solid, hard-edged ellipse (radii 2.5-6 px) of a random colour, anywhere in the image;
* ``missing``: a disc (radius 4-8 px) centred on the object, where the object's pixels are replaced by background
  texture copied from a part of the same image the object does not cover.

Defect pixels get the same pixel noise as the rest of the image. The ground truth is exactly the set of pixels the
defect changed (``defect != clean`` in any channel), so a mask never claims an unchanged pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model_store import data

__all__ = ["DEFECT_KINDS", "DEFECT_START", "DefectBatch", "add_defect", "make_defect_batch"]

DEFECT_KINDS: tuple[str, ...] = ("scratch", "blob", "missing")
"""Defect kinds, in the order images cycle through them."""

DEFECT_START = 2_000_000
"""First test-split index of the defect images (disjoint from the localisation benchmark's 1,000,000..)."""

_NOISE_SIGMA = 0.03  # the clean images' typical pixel noise (theirs is drawn from 0.01-0.05), [0, 1] units
_MIN_PIXELS = 12  # fewest changed pixels a defect may have; a draw that changes fewer is redrawn
_MIN_COLOUR_DISTANCE = 0.3  # RGB distance in [0, 1] units between a drawn defect and the pixels under it
_ATTEMPTS = 50


@dataclass(frozen=True)
class DefectBatch:
    """Defect images with their clean originals: ``images``/``clean [N, H, W, 3] uint8``, ``masks [N, H, W] bool``
    (True = changed by the defect), ``kinds [N]`` (indices into :data:`DEFECT_KINDS`), ``seeds [N]`` (clean seeds)."""

    images: np.ndarray
    clean: np.ndarray
    masks: np.ndarray
    kinds: np.ndarray
    seeds: np.ndarray

    def __len__(self) -> int:
        return int(self.kinds.shape[0])


def _stroke(size: int, rng: np.random.Generator) -> np.ndarray:
    """A straight stroke's pixel mask: points along a segment, each widened to a square of side 1 or 2."""
    length = rng.uniform(12.0, 40.0)
    angle = rng.uniform(0.0, math.pi)
    cx, cy = rng.uniform(0.0, size, 2)
    width = int(rng.integers(1, 3))
    mask = np.zeros((size, size), bool)
    for t in np.linspace(-0.5, 0.5, int(length * 3)):
        x = math.floor(cx + t * length * math.cos(angle))
        y = math.floor(cy + t * length * math.sin(angle))
        mask[max(0, y) : max(0, y + width), max(0, x) : max(0, x + width)] = True
    return mask


def _ellipse(size: int, rng: np.random.Generator) -> np.ndarray:
    rx, ry = rng.uniform(2.5, 6.0, 2)
    cx, cy = rng.uniform(0.0, size, 2)
    angle = rng.uniform(0.0, math.pi)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    u = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
    v = -(xs - cx) * math.sin(angle) + (ys - cy) * math.cos(angle)
    return np.asarray((u / rx) ** 2 + (v / ry) ** 2 <= 1.0)


def _paint(img: np.ndarray, where: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """``img`` with a flat random colour (far enough from the pixels under it) over ``where``; None if no colour is."""
    under = img[where].mean(axis=0)
    for _ in range(_ATTEMPTS):
        colour = rng.uniform(0.0, 1.0, 3)
        if np.linalg.norm(colour - under) >= _MIN_COLOUR_DISTANCE:
            out = img.copy()
            out[where] = colour
            return out
    return None


def _missing(img: np.ndarray, obj: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Cut a disc out of the object and fill it with background copied from an object-free place of the image."""
    size = img.shape[0]
    ys, xs = np.nonzero(obj)
    pick = int(rng.integers(len(ys)))
    radius = rng.uniform(4.0, 8.0)
    gy, gx = np.mgrid[0:size, 0:size]
    hole = ((gy - ys[pick]) ** 2 + (gx - xs[pick]) ** 2 <= radius**2) & obj
    hy, hx = np.nonzero(hole)
    for _ in range(_ATTEMPTS):
        dy, dx = (int(v) for v in rng.integers(-size, size, 2))
        sy, sx = hy + dy, hx + dx
        if sy.min() < 0 or sx.min() < 0 or sy.max() >= size or sx.max() >= size or obj[sy, sx].any():
            continue
        out = img.copy()
        out[hy, hx] = img[sy, sx]
        return out
    return None


def add_defect(clean: np.ndarray, obj: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One defect of ``kind`` on a clean ``uint8 [H, W, 3]`` image whose object mask is ``obj``, drawn from ``seed``.

    Returns:
        The defect image (``uint8``) and its mask (``bool [H, W]``, exactly the pixels that differ from ``clean``).

    Raises:
        ValueError: Unknown kind, or no draw from this seed changed at least 12 pixels.
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    rng = np.random.default_rng([int(seed), DEFECT_KINDS.index(kind)])
    img = clean.astype(np.float64) / 255.0
    size = img.shape[0]
    for _ in range(_ATTEMPTS):
        if kind == "missing":
            drawn = _missing(img, obj, rng)
        else:
            region = _stroke(size, rng) if kind == "scratch" else _ellipse(size, rng)
            drawn = _paint(img, region, rng) if region.sum() >= _MIN_PIXELS else None
        if drawn is None:
            continue
        touched = np.any(drawn != img, axis=-1)
        noisy = np.clip(drawn + rng.normal(0.0, _NOISE_SIGMA, drawn.shape) * touched[..., None], 0.0, 1.0)
        out = np.where(touched[..., None], np.round(noisy * 255.0), clean).astype(np.uint8)
        mask = np.any(out != clean, axis=-1)
        if mask.sum() >= _MIN_PIXELS:
            return out, mask
    raise ValueError(f"no {kind} defect changed >= {_MIN_PIXELS} pixels for seed {seed}")


def make_defect_batch(count: int, start: int = DEFECT_START, size: int = data.DEFAULT_SIZE) -> DefectBatch:
    """Test-split images ``start .. start + count - 1``, each with one defect (kinds cycle in :data:`DEFECT_KINDS`).

    Raises:
        ValueError: Negative ``count`` or indices outside the test split (from :func:`model_store.data.make_batch`).
    """
    clean = data.make_batch("test", start, count, size)
    images, masks = [], []
    kinds = np.arange(len(clean), dtype=np.int64) % len(DEFECT_KINDS)
    for i in range(len(clean)):
        img, mask = add_defect(clean.images[i], clean.masks[i], DEFECT_KINDS[kinds[i]], int(clean.seeds[i]))
        images.append(img)
        masks.append(mask)
    return DefectBatch(
        images=np.stack(images) if images else clean.images.copy(),
        clean=clean.images,
        masks=np.stack(masks) if masks else np.zeros((0, size, size), bool),
        kinds=kinds,
        seeds=clean.seeds,
    )
