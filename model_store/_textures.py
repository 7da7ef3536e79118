"""Procedural backgrounds and fill patterns of the training generator (``model_store.data``).

Every function draws from the ``numpy`` generator it is given and returns float32 RGB in [0, 1], ``[size, size, 3]``.
Background families (:data:`BACKGROUNDS`): a flat colour, a linear or radial two-colour gradient, stripes, a rotated
checkerboard, low-frequency colour noise, and the original cluttered mix (gradient + grating + colour noise + soft
blobs). Soft Gaussian blobs and thin scribbles can be laid over any family; both are distractors without a solid,
hard-edged outline of a class shape. :func:`pattern` fills an object (the generator's "textured" style) with stripes,
a checkerboard or noise between two colours.

The style-shifted evaluation set (``model_store.shifted``) has its own drawing code and does not use this module.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["BACKGROUNDS", "background", "pattern", "scribbles", "smooth_noise"]

BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "stripes", "checker", "noise", "clutter")
"""Background families, drawn uniformly."""

FloatArray = np.ndarray


def _grid(size: int) -> tuple[FloatArray, FloatArray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return yy, xx


def smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> FloatArray:
    """Low-frequency noise ``[size, size, channels]`` in about [-1, 1]: a coarse random grid, bilinearly upsampled."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1, channels))
    pos = np.linspace(0.0, cells, size, endpoint=False) + cells / (2 * size)
    i0 = np.clip(np.floor(pos).astype(int), 0, cells - 1)
    f = (pos - i0)[:, None]
    rows = grid[i0] * (1 - f[:, :, None]) + grid[i0 + 1] * f[:, :, None]  # [size, cells+1, C]
    out = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
    return np.asarray(out, dtype=np.float32)


def _mix(c0: FloatArray, c1: FloatArray, t: FloatArray) -> FloatArray:
    """Per-pixel blend of two colours by ``t`` ``[size, size]`` in [0, 1]."""
    return np.asarray(c0 * (1 - t[..., None]) + c1 * t[..., None], dtype=np.float32)


def _stripes_t(rng: np.random.Generator, size: int, period_px: tuple[float, float]) -> FloatArray:
    """Stripe selector in [0, 1]: a square wave of random period, orientation, phase and duty, 1 px soft edges."""
    yy, xx = _grid(size)
    period = rng.uniform(*period_px) / size
    o = rng.uniform(0, math.pi)
    u = (xx * math.cos(o) + yy * math.sin(o)) / period + rng.uniform(0, 1)
    frac = u - np.floor(u)
    duty = rng.uniform(0.3, 0.7)
    edge = 1.0 / (period * size)  # one pixel in units of the period
    return np.asarray(np.clip((duty / 2 - np.abs(frac - 0.5)) / edge + 0.5, 0, 1), dtype=np.float32)


def _checker_t(rng: np.random.Generator, size: int, cell_px: tuple[float, float]) -> FloatArray:
    """Checkerboard selector in {0, 1} of random cell size, rotation and offset."""
    yy, xx = _grid(size)
    cell = rng.uniform(*cell_px) / size
    a = rng.uniform(0, math.pi / 2)
    u = (xx * math.cos(a) + yy * math.sin(a)) / cell + rng.uniform(0, 2)
    v = (-xx * math.sin(a) + yy * math.cos(a)) / cell + rng.uniform(0, 2)
    return np.asarray((np.floor(u) + np.floor(v)) % 2, dtype=np.float32)


def _clutter(rng: np.random.Generator, size: int) -> FloatArray:
    """The original background: gradient, sinusoidal grating, colour noise and soft blobs."""
    yy, xx = _grid(size)
    c0, c1 = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    g = rng.uniform(0, 2 * math.pi)
    img = _mix(c0, c1, np.clip(0.5 + (xx - 0.5) * math.cos(g) + (yy - 0.5) * math.sin(g), 0, 1))
    period = rng.uniform(0.16, 0.4)
    o = rng.uniform(0, math.pi)
    wave = np.sin(2 * math.pi * (xx * math.cos(o) + yy * math.sin(o)) / period + rng.uniform(0, 2 * math.pi))
    img = img + wave[..., None] * rng.uniform(0.02, 0.12, 3)
    img = img + smooth_noise(rng, size, int(rng.integers(3, 7)), 3) * rng.uniform(0.05, 0.15)
    return _blobs(rng, np.clip(img, 0, 1), int(rng.integers(2, 6)))


def _blobs(rng: np.random.Generator, img: FloatArray, count: int) -> FloatArray:
    """Blend ``count`` soft, anisotropic Gaussian blobs of random colours into ``img`` (no outline: never a shape)."""
    size = img.shape[0]
    yy, xx = _grid(size)
    for _ in range(count):
        bx, by = rng.uniform(0, 1, 2)
        sx, sy = rng.uniform(0.03, 0.12, 2)
        a = rng.uniform(0, math.pi)
        dx, dy = xx - bx, yy - by
        u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
        w = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))[..., None] * rng.uniform(0.4, 0.8)
        img = img * (1 - w) + rng.uniform(0, 1, 3) * w
    return np.asarray(img, dtype=np.float32)


def background(rng: np.random.Generator, size: int) -> tuple[FloatArray, str]:
    """A background ``[size, size, 3]`` of a random family, maybe with distractors; returns it and the family."""
    family = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    c0, c1 = rng.uniform(0.0, 1.0, 3), rng.uniform(0.0, 1.0, 3)
    yy, xx = _grid(size)
    img: FloatArray
    if family == "flat":
        img = np.broadcast_to(c0, (size, size, 3)).astype(np.float32)
    elif family == "gradient":
        if rng.uniform() < 0.5:
            g = rng.uniform(0, 2 * math.pi)
            t = 0.5 + (xx - 0.5) * math.cos(g) + (yy - 0.5) * math.sin(g)
        else:
            cx, cy = rng.uniform(0, 1, 2)
            t = np.hypot(xx - cx, yy - cy) / rng.uniform(0.4, 1.0)
        img = _mix(c0, c1, np.clip(t, 0, 1))
    elif family == "stripes":
        img = _mix(c0, c1, _stripes_t(rng, size, (0.06 * size, 0.3 * size)))
    elif family == "checker":
        img = _mix(c0, c1, _checker_t(rng, size, (0.06 * size, 0.25 * size)))
    elif family == "noise":
        img = np.clip(0.5 + 0.5 * smooth_noise(rng, size, int(rng.integers(4, 12)), 3), 0, 1)
        img = img + smooth_noise(rng, size, int(rng.integers(12, 24)), 3) * rng.uniform(0.05, 0.2)
    else:
        img = _clutter(rng, size)
    if family != "clutter" and rng.uniform() < 0.4:
        img = _blobs(rng, img, int(rng.integers(1, 4)))
    return np.asarray(np.clip(img, 0, 1), dtype=np.float32), family


def pattern(rng: np.random.Generator, size: int, c0: FloatArray, c1: FloatArray) -> FloatArray:
    """A fill texture between colours ``c0`` and ``c1``: fine stripes, a small checkerboard or blotchy noise."""
    kind = int(rng.integers(3))
    if kind == 0:
        t = _stripes_t(rng, size, (3.0, 8.0))
    elif kind == 1:
        t = _checker_t(rng, size, (2.5, 6.0))
    else:
        t = np.clip(0.5 + 0.8 * smooth_noise(rng, size, int(rng.integers(8, 16)), 1)[..., 0], 0, 1)
    return _mix(c0, c1, t)


def scribbles(rng: np.random.Generator, size: int) -> tuple[FloatArray, FloatArray]:
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
