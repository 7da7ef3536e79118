"""Array encodings for maps and reconstructions (FLOAT16 / FLOAT32 / UINT8 / PNG), and their size bounds.

The bounds are what lets the handler refuse an oversized response *before* any work is done: for every encoding the
encoded size of an array of a given shape is known exactly (float and uint8) or bounded from above (PNG: a stored,
uncompressed zlib stream is the worst case). Protobuf-free: ``_encode`` copies the results into ``Tensor`` messages.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = [
    "Encoded",
    "EncodingName",
    "decode_array",
    "encode_array",
    "encoded_size_bound",
    "resize_map",
]

EncodingName = Literal["FLOAT16", "FLOAT32", "UINT8", "PNG"]

_FLOAT16_MAX: Final = float(np.finfo(np.float16).max)
# Smallest normal float16. A map whose largest |value| is below it would be stored in subnormals and lose its
# relative precision (e.g. the tiny gradients of an untrained model); such maps are scaled by a power of two.
_FLOAT16_TINY: Final = float(np.finfo(np.float16).tiny)
_BYTES_PER_VALUE: Final[dict[str, int]] = {"FLOAT16": 2, "FLOAT32": 4, "UINT8": 1}
# PNG worst case around the raw scanlines: signature 8, IHDR 25, IEND 12, a 12-byte header per IDAT chunk, and
# zlib's deflateBound() expansion for incompressible data (plus its 6-byte wrapper).
_PNG_FIXED: Final = 8 + 25 + 12 + 13 + 6


@dataclass(frozen=True)
class Encoded:
    """One encoded array.

    Attributes:
        shape: The array's shape, outermost first.
        encoding: The encoding actually used. Always the requested one.
        data: The encoded bytes.
        value_min: For UINT8 and PNG, the value that 0 stands for (the array's minimum); 0 otherwise.
        value_max: For UINT8 and PNG, the value that 255 stands for (the array's maximum); 0 otherwise.
        scale: For FLOAT16, the power of two the stored values are multiplied by (1.0 unless the array's largest
            |value| lies outside float16's normal range: below 6.1e-5, or above 65504).
    """

    shape: tuple[int, ...]
    encoding: EncodingName
    data: bytes
    value_min: float = 0.0
    value_max: float = 0.0
    scale: float = 1.0


def encoded_size_bound(shape: tuple[int, ...], encoding: EncodingName) -> int:
    """Bytes that :func:`encode_array` can produce at most for an array of ``shape`` (exact for non-PNG)."""
    values = math.prod(shape)
    if encoding != "PNG":
        return values * _BYTES_PER_VALUE[encoding]
    height, width = shape[-2], shape[-1]
    channels = shape[0] if len(shape) == 3 else 1
    raw = height * (1 + width * channels)  # one filter byte per scanline
    deflated = raw + (raw >> 12) + (raw >> 14) + (raw >> 25)
    chunks = deflated // 8192 + 1  # Pillow writes IDAT chunks of its encoder buffer size (64 KiB or more)
    return _PNG_FIXED + deflated + 12 * chunks


def _quantise(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    low, high = float(array.min()), float(array.max())
    if not high > low:
        return np.zeros(array.shape, dtype=np.uint8), low, low
    scaled = np.rint((array.astype(np.float64) - low) * (255.0 / (high - low)))
    return np.clip(scaled, 0, 255).astype(np.uint8), low, high


def encode_array(tensor: torch.Tensor, encoding: EncodingName) -> Encoded:
    """Encodes a float map ``[h, w]`` / ``[C, h, w]`` (any device) or a reconstruction ``[3, H, W]``.

    FLOAT16/FLOAT32 store values little-endian in C order; UINT8 and PNG quantise linearly from the array's
    ``[min, max]`` to 0..255 and report that range (a constant array encodes as zeros with ``min == max``). PNG is
    8-bit grey for ``[h, w]`` and ``[1, h, w]`` arrays and RGB for 3-channel arrays.
    """
    array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
    shape = tuple(int(d) for d in array.shape)
    if not np.isfinite(array).all():
        # The engine never produces these; encode them visibly rather than as silently wrong numbers.
        largest = float(np.finfo(np.float32).max)
        array = np.nan_to_num(array, nan=0.0, posinf=largest, neginf=-largest)
    if encoding == "FLOAT16":
        peak = float(np.abs(array).max(initial=0.0))
        scale = 1.0
        if peak > _FLOAT16_MAX or 0.0 < peak < _FLOAT16_TINY:
            # A power of two: dividing by it is exact, and the peak lands in [1, 2).
            scale = float(2.0 ** math.floor(math.log2(peak)))
        return Encoded(shape, "FLOAT16", (array / scale).astype("<f2").tobytes(), scale=scale)
    if encoding == "FLOAT32":
        return Encoded(shape, "FLOAT32", array.astype("<f4").tobytes())
    quantised, low, high = _quantise(array)
    if encoding == "UINT8":
        return Encoded(shape, "UINT8", quantised.tobytes(), low, high)
    if quantised.ndim == 3 and quantised.shape[0] == 3:
        img = Image.fromarray(np.ascontiguousarray(quantised.transpose(1, 2, 0)), "RGB")
    elif quantised.ndim == 2 or (quantised.ndim == 3 and quantised.shape[0] == 1):
        img = Image.fromarray(quantised.reshape(quantised.shape[-2:]), "L")
    else:
        raise ValueError(f"PNG encodes [h, w], [1, h, w] or [3, h, w] arrays, not {shape}")
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=6)
    return Encoded(shape, "PNG", buf.getvalue(), low, high)


def decode_array(encoded: Encoded) -> np.ndarray:
    """Inverse of :func:`encode_array` (up to quantisation): a float32 array of ``encoded.shape``."""
    if encoded.encoding in ("FLOAT16", "FLOAT32"):
        dtype = "<f2" if encoded.encoding == "FLOAT16" else "<f4"
        values = np.frombuffer(encoded.data, dtype=dtype).astype(np.float32).reshape(encoded.shape)
        return values * np.float32(encoded.scale) if encoded.scale != 1.0 else values
    if encoded.encoding == "UINT8":
        q = np.frombuffer(encoded.data, dtype=np.uint8).reshape(encoded.shape)
    else:
        with Image.open(io.BytesIO(encoded.data)) as img:
            q = np.asarray(img)
        q = q.transpose(2, 0, 1) if q.ndim == 3 else q.reshape(encoded.shape)
    span = encoded.value_max - encoded.value_min
    return (q.astype(np.float32) * (span / 255.0) + encoded.value_min).astype(np.float32)


def resize_map(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``, as the engine's ``upsampled``) of ``[h, w]`` or ``[C, h, w]``."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    batched = tensor.reshape(1, -1, *tensor.shape[-2:]).to(torch.float32)
    out = F.interpolate(batched, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*tensor.shape[:-2], *size)
