"""The style-shifted shapes evaluation set: the six classes drawn by code and in styles training never sees.

The training generator (``model_store.data``) draws with PIL at 4x supersampling, picks colours uniformly in RGB and
adds Gaussian pixel noise. This module shares none of its drawing code: shapes are rendered from analytic signed
distance fields (1 px linear edge ramp instead of supersampling), with shape proportions of their own (star inner
radius, cross arm width, ring hole, slightly rounded square corners), and everything else differs too:

* colours come from named HSV palettes (:data:`PALETTES`: pastel, earth, neon, muted, grey);
* backgrounds (:data:`BACKGROUNDS`): radial gradient with vignette, hard-edged stripes, axis-aligned or diagonal
  checkerboard, cross-hatching, polka dots, and 1/f "paper" noise made in the Fourier domain;
* shape styles (:data:`STYLES`): gradient fill, outline, two-tone (fill plus a contrasting rim), and flat fill
  with a soft drop shadow;
* placement is biased off-centre (towards edges and corners);
* degradation is JPEG compression or a down-and-up resampling blur plus uniform noise, not Gaussian noise.

Ground truth as in ``model_store.data``: the mask is the object's ink (coverage >= 0.5; a drop shadow is not part of
it), the box is computed from the mask. Image ``index`` is a pure function of ``(index, size)``; the seed stream is
``numpy.random.default_rng((SHIFTED_STREAM, index))``, which no integer seed of the training generator produces.
Nothing in training imports this module (``tests/model_store/test_shifted.py`` checks that).
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from model_store.data import DEFAULT_SIZE, SHAPE_CLASSES, Batch, Sample

__all__ = ["BACKGROUNDS", "PALETTES", "SHIFTED_STREAM", "STYLES", "make_shifted_batch", "render_shifted"]

SHIFTED_STREAM = 0x5D1F7ED
"""First word of every shifted image's seed sequence."""

PALETTES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "pastel": ((0.0, 1.0), (0.2, 0.45), (0.85, 1.0)),
    "earth": ((0.02, 0.16), (0.3, 0.75), (0.25, 0.75)),
    "neon": ((0.0, 1.0), (0.85, 1.0), (0.9, 1.0)),
    "muted": ((0.0, 1.0), (0.1, 0.35), (0.3, 0.8)),
    "grey": ((0.0, 1.0), (0.0, 0.0), (0.05, 0.95)),
}
"""Palette name -> (hue, saturation, value) ranges in [0, 1]."""

BACKGROUNDS: tuple[str, ...] = ("radial", "stripes", "checker", "hatch", "dots", "paper")
STYLES: tuple[str, ...] = ("gradient", "outlined", "two_tone", "shadowed")

_MIN_SIZE = 16
_MIN_FRACTION, _MAX_FRACTION = 0.26, 0.5  # object diameter / image side
_MIN_CONTRAST = 0.32  # 10th percentile of the RGB distance between the object's colours and the background under it
_MIN_STROKE = 1.6

Array = np.ndarray


def _hsv(rng: np.random.Generator, palette: str) -> Array:
    """One RGB colour in [0, 1] from ``palette``."""
    (h0, h1), (s0, s1), (v0, v1) = PALETTES[palette]
    h, s, v = rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return np.asarray(v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1), dtype=np.float32)


def _palette(rng: np.random.Generator) -> str:
    return tuple(PALETTES)[int(rng.integers(len(PALETTES)))]


def _coords(size: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates ``(x, y)``, each ``[size, size]``."""
    c = np.arange(size, dtype=np.float64) + 0.5
    return np.meshgrid(c, c)


def _blend(base: Array, colour: Array, alpha: Array) -> Array:
    return np.asarray(base * (1 - alpha[..., None]) + colour * alpha[..., None], dtype=np.float32)


# ------------------------------------------------------------------------------------------ signed distance fields


def _polygon_sdf(x: Array, y: Array, verts: Array) -> Array:
    """Signed distance (negative inside) from every pixel centre to a closed polygon ``[K, 2]`` (even-odd rule)."""
    d2 = np.full(x.shape, np.inf)
    inside = np.zeros(x.shape, dtype=bool)
    for i in range(len(verts)):
        (ax, ay), (bx, by) = verts[i], verts[i - 1]
        ex, ey, wx, wy = bx - ax, by - ay, x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        d2 = np.minimum(d2, (wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        crosses = (ay > y) != (by > y)
        inside ^= crosses & (x < ex * (y - ay) / np.where(ey == 0, 1e-12, ey) + ax)
    return np.asarray(np.where(inside, -1.0, 1.0) * np.sqrt(d2))


def _vertices(kind: str, rng: np.random.Generator, radius: float) -> Array:
    """Vertices of a polygonal class shape of circumradius ``radius`` around the origin, unrotated."""
    if kind == "square":
        t = np.arange(4) * (math.pi / 2) + math.pi / 4
        rr = np.full(4, radius)
    elif kind == "triangle":
        t = np.arange(3) * (2 * math.pi / 3) + math.pi / 2
        rr = np.full(3, radius)
    elif kind == "star":
        t = np.arange(10) * (math.pi / 5) + math.pi / 2
        rr = np.where(np.arange(10) % 2 == 0, radius, radius * rng.uniform(0.38, 0.5))
    else:  # cross: arm half-width h, arm half-length a with its corners on the circumcircle
        w = rng.uniform(0.3, 0.42)
        a = radius / math.hypot(1, w)
        h = w * a
        return np.array([[h, a], [h, h], [a, h], [a, -h], [h, -h], [h, -a], [-h, -a], [-h, -h], [-a, -h],
                         [-a, h], [-h, h], [-h, a]])  # fmt: skip
    return np.stack([np.cos(t) * rr, np.sin(t) * rr], 1)


def _shape_sdf(kind: str, rng: np.random.Generator, size: int, cx: float, cy: float, radius: float) -> Array:
    """Signed distance field ``[size, size]`` of one class shape centred at ``(cx, cy)``, randomly rotated."""
    x, y = _coords(size)
    dx, dy = x - cx, y - cy
    angle = rng.uniform(0, 2 * math.pi)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == "circle":
        return np.asarray(np.hypot(u, v) - radius)
    if kind == "ring":
        inner = radius * rng.uniform(0.5, 0.62)
        return np.asarray(np.abs(np.hypot(u, v) - (radius + inner) / 2) - (radius - inner) / 2)
    rounding = radius * rng.uniform(0.0, 0.12) if kind == "square" else 0.0
    return _polygon_sdf(u, v, _vertices(kind, rng, radius - rounding * math.sqrt(2))) - rounding


def _ramp(sdf: Array) -> Array:
    """Coverage from a signed distance: a 1 px linear edge ramp."""
    return np.asarray(np.clip(0.5 - sdf, 0.0, 1.0), dtype=np.float32)


# ------------------------------------------------------------------------------------------------------ backgrounds


def _paper(rng: np.random.Generator, size: int) -> Array:
    """1/f noise ``[size, size]`` in [0, 1]: white noise shaped in the Fourier domain."""
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size)))
    spectrum = np.fft.fft2(rng.normal(size=(size, size))) / np.maximum(f, 1.0 / size) ** rng.uniform(1.0, 1.8)
    field = np.real(np.fft.ifft2(spectrum))
    return np.asarray((field - field.min()) / max(float(np.ptp(field)), 1e-9), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> Array:
    """A background ``[size, size, 3]`` of one of :data:`BACKGROUNDS`, coloured from one palette."""
    name = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    palette = _palette(rng)
    c0, c1 = _hsv(rng, palette), _hsv(rng, palette)
    x, y = _coords(size)
    base = np.broadcast_to(c0, (size, size, 3)).astype(np.float32)
    if name == "radial":
        cx, cy = rng.uniform(0, size, 2)
        t = np.clip(np.hypot(x - cx, y - cy) / (size * rng.uniform(0.5, 1.1)), 0, 1)
        img = _blend(base, c1, t.astype(np.float32))
        vignette = 1 - 0.35 * (np.hypot(x - size / 2, y - size / 2) / size) ** 2
        return np.asarray(img * vignette[..., None], dtype=np.float32)
    if name == "stripes":
        a, period = rng.uniform(0, math.pi), rng.uniform(5, 16)
        t = ((np.cos(a) * x + np.sin(a) * y) // (period / 2)) % 2
    elif name == "checker":
        cell = rng.uniform(4, 14)
        diagonal = rng.uniform() >= 0.5
        t = ((x + y) // cell + (x - y) // cell) % 2 if diagonal else (x // cell + y // cell) % 2
    elif name == "hatch":
        spacing, width = rng.uniform(4, 9), rng.uniform(0.8, 1.6)
        t = np.zeros((size, size))
        for direction in (1.0, -1.0):
            u = (x + direction * y) / math.sqrt(2) % spacing
            t = np.maximum(t, np.clip(width / 2 + 0.5 - np.abs(u - spacing / 2), 0, 1))
    elif name == "dots":
        spacing = rng.uniform(6, 10)
        r = rng.uniform(1.0, 2.2)
        ox, oy = rng.uniform(0, spacing, 2)
        du = (x + ox) % spacing - spacing / 2
        dv = (y + oy) % spacing - spacing / 2
        t = np.clip(r + 0.5 - np.hypot(du, dv), 0, 1)
    else:
        t = _paper(rng, size)
    return _blend(base, c1, np.asarray(t, dtype=np.float32))


# -------------------------------------------------------------------------------------------------------- the object


def _contrasting(rng: np.random.Generator, under: Array) -> Array:
    """A palette colour far from the background pixels ``under`` ``[K, 3]`` (10th-percentile distance)."""
    best, best_score = np.zeros(3, np.float32), -1.0
    for _ in range(64):
        colour = _hsv(rng, _palette(rng))
        score = float(np.percentile(np.linalg.norm(under - colour, axis=-1), 10))
        if score >= _MIN_CONTRAST:
            return colour
        if score > best_score:
            best, best_score = colour, score
    return best


def _placement(rng: np.random.Generator, size: int, margin: float) -> tuple[float, float]:
    """A centre keeping the object inside the image, preferring the outer band (off-centre)."""
    lo, hi = margin, size - margin
    cx, cy = rng.uniform(lo, hi, 2)
    for _ in range(8):
        if math.hypot(cx - size / 2, cy - size / 2) >= 0.22 * size or hi - lo < 0.3 * size:
            break
        cx, cy = rng.uniform(lo, hi, 2)
    return float(cx), float(cy)


def _draw_object(rng: np.random.Generator, img: Array, kind: str, size: int) -> tuple[Array, Array]:
    """Draw the object of class ``kind`` on ``img``; returns the new image and the ink mask."""
    style = STYLES[int(rng.integers(len(STYLES)))]
    radius = size * rng.uniform(_MIN_FRACTION, _MAX_FRACTION) / 2
    stroke = max(_MIN_STROKE, radius * rng.uniform(0.12, 0.22)) if style == "outlined" else 0.0
    cx, cy = _placement(rng, size, radius + stroke / 2 + 1.0)
    sdf = _shape_sdf(kind, rng, size, cx, cy, radius)
    ink = _ramp(np.abs(sdf) - stroke / 2) if style == "outlined" else _ramp(sdf)
    mask = ink >= 0.5
    colour = _contrasting(rng, img[mask])
    if style == "shadowed":
        off = rng.uniform(1.5, 3.5, 2)
        shadow = np.roll(ink, (round(float(off[1])), round(float(off[0]))), axis=(0, 1))
        shadow = np.clip(shadow - ink, 0, 1) * rng.uniform(0.35, 0.6)
        img = _blend(img, np.zeros(3, np.float32), shadow)
    if style == "gradient":
        second = _contrasting(rng, img[mask])
        x, y = _coords(size)
        a = rng.uniform(0, 2 * math.pi)
        t = np.clip(0.5 + ((x - cx) * math.cos(a) + (y - cy) * math.sin(a)) / (2 * radius), 0, 1)
        fill = colour * (1 - t[..., None]) + second * t[..., None]
        img = np.asarray(img * (1 - ink[..., None]) + fill * ink[..., None], dtype=np.float32)
    else:
        img = _blend(img, colour, ink)
    if style == "two_tone":
        rim = _ramp(np.abs(sdf + 1.0) - 1.0)  # a 2 px band just inside the contour
        img = _blend(img, _contrasting(rng, colour[None]), rim * (ink > 0))
    return img, mask


def _degrade(rng: np.random.Generator, img: Array) -> Array:
    """JPEG compression, or a down-and-up resampling blur, then uniform noise; returns ``uint8``."""
    size = img.shape[0]
    pil = Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
    if rng.uniform() < 0.5:
        buffer = io.BytesIO()
        pil.save(buffer, format="JPEG", quality=int(rng.integers(35, 86)))
        pil = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    elif rng.uniform() < 0.5:
        small = max(8, int(size * rng.uniform(0.55, 0.8)))
        pil = pil.resize((small, small), Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.BICUBIC)
    out = np.asarray(pil, dtype=np.float32) / 255 + rng.uniform(-0.03, 0.03, (size, size, 3))
    return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)


def render_shifted(index: int, size: int = DEFAULT_SIZE) -> Sample:
    """Render image ``index`` of the shifted set at ``size`` x ``size`` pixels (deterministic).

    Raises:
        ValueError: ``index`` is not a non-negative integer, or ``size`` is below 16.
    """
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < _MIN_SIZE:
        raise ValueError(f"size must be an integer >= {_MIN_SIZE}, got {size!r}")
    rng = np.random.default_rng((SHIFTED_STREAM, int(index)))
    label = int(rng.integers(len(SHAPE_CLASSES)))
    img, mask = _draw_object(rng, _background(rng, size), SHAPE_CLASSES[label], size)
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Sample(image=_degrade(rng, img), label=label, box=box, mask=mask, seed=int(index))


def make_shifted_batch(start: int, count: int, size: int = DEFAULT_SIZE) -> Batch:
    """Images ``start .. start + count - 1`` of the shifted set (``Batch.seeds`` holds the indices).

    Raises:
        ValueError: Negative ``start`` or ``count``, or a bad ``size``.
    """
    for name, value in (("start", start), ("count", count)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    samples = [render_shifted(start + i, size) for i in range(count)]
    if not samples:
        raise ValueError("count must be positive")
    return Batch(
        images=np.stack([s.image for s in samples]),
        labels=np.array([s.label for s in samples], dtype=np.int64),
        boxes=np.array([s.box for s in samples], dtype=np.int64),
        masks=np.stack([s.mask for s in samples]),
        seeds=np.array([s.seed for s in samples], dtype=np.int64),
    )
