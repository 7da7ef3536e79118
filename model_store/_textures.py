"""Background families of the training generator (:mod:`model_store.data`).

Each family is a function ``(rng, size) -> float32 [size, size, 3]`` in [0, 1]; :func:`background` picks one per
image by :data:`FAMILY_WEIGHTS` and lays soft distractor blobs and an illumination field over it. None of them draws
a hard-edged solid blob of the classes' sizes: hard edges come only as thin or periodic structure (stripes, checks,
dots, hatching), so the object stays the only solid shape of its scale in the image.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["FAMILY_WEIGHTS", "background", "random_colour", "smooth_noise", "square_wave"]

Array = np.ndarray


def smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int) -> Array:
    """Low-frequency noise ``[size, size, channels]`` in about [-1, 1]: a coarse random grid, bilinearly upsampled."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1, channels))
    pos = np.linspace(0.0, cells, size, endpoint=False) + cells / (2 * size)
    i0 = np.clip(np.floor(pos).astype(int), 0, cells - 1)
    f = (pos - i0)[:, None]
    rows = grid[i0] * (1 - f[:, :, None]) + grid[i0 + 1] * f[:, :, None]  # [size, cells+1, C]
    out = rows[:, i0] * (1 - f[None, :, :]) + rows[:, i0 + 1] * f[None, :, :]
    return np.asarray(out, dtype=np.float32)


def random_colour(rng: np.random.Generator) -> Array:
    """A colour in [0, 1]^3: uniform in RGB, pulled towards its grey level half of the time (muted colours)."""
    colour = rng.uniform(0.0, 1.0, 3)
    if rng.uniform() < 0.5:
        grey = colour.mean()
        colour = grey + (colour - grey) * rng.uniform(0.0, 0.8)
    return np.asarray(colour, dtype=np.float32)


def _grid(size: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates ``(x, y)`` in pixels, each ``[size, size]``."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xx, yy


def _two_colour(rng: np.random.Generator, t: Array) -> Array:
    c0, c1 = random_colour(rng), random_colour(rng)
    return np.asarray(c0 * (1 - t[..., None]) + c1 * t[..., None], dtype=np.float32)


def _smooth(rng: np.random.Generator, size: int) -> Array:
    """A two-colour linear gradient, a soft sinusoidal grating and low-frequency colour noise."""
    xx, yy = _grid(size)
    xx, yy = xx / size, yy / size
    g = rng.uniform(0, 2 * math.pi)
    t = np.clip(0.5 + (xx - 0.5) * math.cos(g) + (yy - 0.5) * math.sin(g), 0, 1)
    img = _two_colour(rng, t)
    period = rng.uniform(0.16, 0.4)
    o = rng.uniform(0, math.pi)
    wave = np.sin(2 * math.pi * (xx * math.cos(o) + yy * math.sin(o)) / period + rng.uniform(0, 2 * math.pi))
    img = img + wave[..., None] * rng.uniform(0.02, 0.12, 3)
    return np.asarray(img + smooth_noise(rng, size, int(rng.integers(3, 7)), 3) * rng.uniform(0.05, 0.15))


def _orientation(rng: np.random.Generator) -> float:
    """A direction in [0, pi): axis-aligned or diagonal a third of the time each way, otherwise any."""
    u = rng.uniform()
    if u < 0.35:
        return float(rng.integers(2)) * math.pi / 2
    if u < 0.5:
        return math.pi / 4 + float(rng.integers(2)) * math.pi / 2
    return float(rng.uniform(0, math.pi))


def square_wave(x: Array, y: Array, angle: float, period: float, phase: float) -> Array:
    """Anti-aliased square wave in [0, 1] across direction ``angle`` (a ~1 px transition at each edge)."""
    u = (x * math.cos(angle) + y * math.sin(angle)) / period + phase
    tri = np.abs((u % 1.0) - 0.5) * 2.0  # triangle wave in [0, 1]
    return np.asarray(np.clip((tri - 0.5) * period + 0.5, 0.0, 1.0), dtype=np.float32)


def _bands(rng: np.random.Generator, size: int) -> Array:
    """Hard-edged stripes (one direction) or checks (two): the strongest edges a background can have."""
    x, y = _grid(size)
    angle, period = _orientation(rng), rng.uniform(4.0, 20.0)
    t = square_wave(x, y, angle, period, rng.uniform())
    if rng.uniform() < 0.5:  # checks: XOR of two perpendicular (or skewed) square waves
        second = angle + math.pi / 2 + (0.0 if rng.uniform() < 0.7 else rng.uniform(-0.5, 0.5))
        s = square_wave(x, y, second, period * rng.uniform(0.8, 1.25), rng.uniform())
        t = t + s - 2 * t * s
    return _two_colour(rng, t)


def _lattice(rng: np.random.Generator, size: int) -> Array:
    """Dots on a (maybe staggered) rotated grid, or hatching in one or two directions: small motifs, <= 5 px."""
    x, y = _grid(size)
    a = _orientation(rng)
    u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
    spacing = rng.uniform(3.5, 10.0)
    if rng.uniform() < 0.5:
        radius = rng.uniform(0.7, min(2.5, spacing * 0.35))
        row = np.floor(v / spacing)
        shift = spacing / 2 if rng.uniform() < 0.5 else 0.0
        du = (u + row * shift) % spacing - spacing / 2
        dv = v % spacing - spacing / 2
        t = np.clip(radius + 0.5 - np.hypot(du, dv), 0, 1)
    else:
        width = rng.uniform(0.7, min(2.0, spacing * 0.4))
        t = np.clip(width / 2 + 0.5 - np.abs(u % spacing - spacing / 2), 0, 1)
        if rng.uniform() < 0.5:
            t = np.maximum(t, np.clip(width / 2 + 0.5 - np.abs(v % spacing - spacing / 2), 0, 1))
    return _two_colour(rng, np.asarray(t, dtype=np.float32))


def _fractal(rng: np.random.Generator, size: int) -> Array:
    """Multi-octave value noise, per channel or mapped between two colours: mottled, cloud-like texture."""
    octaves = [smooth_noise(rng, size, cells, 3) * 0.6**k for k, cells in enumerate((2, 4, 8, 16, 32))]
    field = np.sum(octaves, axis=0)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    if rng.uniform() < 0.5:
        return np.asarray(field, dtype=np.float32)
    return _two_colour(rng, np.asarray(field.mean(axis=-1), dtype=np.float32))


def _flat(rng: np.random.Generator, size: int) -> Array:
    """One colour with a faint gradient: the easy case, kept so plain backgrounds stay in distribution."""
    x, y = _grid(size)
    tilt = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) / size * rng.uniform(0.0, 0.15)
    return np.asarray(random_colour(rng) + tilt[..., None], dtype=np.float32)


FAMILY_WEIGHTS = {"smooth": 0.3, "bands": 0.2, "lattice": 0.2, "fractal": 0.15, "flat": 0.15}
"""Background family -> probability."""

_FAMILIES = {"smooth": _smooth, "bands": _bands, "lattice": _lattice, "fractal": _fractal, "flat": _flat}


def _blobs(rng: np.random.Generator, img: Array, count: int) -> Array:
    """Soft, anisotropic Gaussian distractor blobs: no outline, so never a class shape."""
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for _ in range(count):
        bx, by = rng.uniform(0, 1, 2)
        sx, sy = rng.uniform(0.03, 0.12, 2)
        a = rng.uniform(0, math.pi)
        dx, dy = xx - bx, yy - by
        u, v = dx * math.cos(a) + dy * math.sin(a), -dx * math.sin(a) + dy * math.cos(a)
        w = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))[..., None] * rng.uniform(0.4, 0.8)
        img = img * (1 - w) + random_colour(rng) * w
    return img


def background(rng: np.random.Generator, size: int) -> tuple[Array, str]:
    """One background ``[size, size, 3]`` float32 in [0, 1] and the name of its family."""
    names = tuple(FAMILY_WEIGHTS)
    name = names[int(rng.choice(len(names), p=np.array(list(FAMILY_WEIGHTS.values()))))]
    img = _FAMILIES[name](rng, size)
    img = _blobs(rng, img, int(rng.integers(0, 5)) if name != "flat" else int(rng.integers(0, 2)))
    if rng.uniform() < 0.4:  # uneven illumination over the whole scene
        img = img * (1.0 + smooth_noise(rng, size, 2, 1) * rng.uniform(0.1, 0.3))
    return np.asarray(np.clip(img, 0, 1), dtype=np.float32), name
