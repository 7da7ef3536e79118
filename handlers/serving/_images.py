"""Defensive image decoding: request bytes (an image file or a raw pixel array) to a checked RGB image or tensor.

Everything here treats its input as hostile: bytes come straight off the network. The order of checks matters:

1. the byte count is capped before Pillow sees anything;
2. ``Image.open`` is limited to a short allow-list of formats and only reads the header;
3. the pixel count claimed by the header is compared with our cap *before* any pixel is decoded (a 12 KB PNG can
   claim 10000x10000). Pillow's own decompression-bomb warning is turned into an error while opening, so a file
   above Pillow's global limit is refused too; ``Image.MAX_IMAGE_PIXELS`` itself is never changed;
4. pixels are decoded with ``load()``; truncated or corrupt files raise (``LOAD_TRUNCATED_IMAGES`` stays off);
5. EXIF orientation is applied, frame 0 of animations is used, and every mode is brought to 8-bit RGB explicitly
   (see :func:`to_rgb` for the rules: alpha is composited on white, 16-bit grey is scaled, CMYK converted).

Raw pixel arrays (the proto's ``Image.pixels``) get the same caps plus shape, length, finiteness and range checks.
What happens next (crop, resampling, normalisation) is :class:`handlers.preprocess.Preprocessor`.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from handlers.engine.errors import InvalidArgumentError, ResourceExhaustedError

__all__ = [
    "ALLOWED_FORMATS",
    "PixelDType",
    "decode_image",
    "pixels_to_tensor",
    "to_rgb",
]

ALLOWED_FORMATS: Final[tuple[str, ...]] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
"""Pillow format names accepted for encoded images; anything else is refused without being parsed."""

PixelDType = Literal["float32", "float16", "uint8"]

# What Pillow raises for malformed files varies by plugin; all of these mean "the bytes are not a valid image".
_DECODE_ERRORS: Final = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, struct.error, zlib.error)
_WHITE: Final = (255, 255, 255)
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_SIXTEEN_BIT_MODES: Final = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_DIRECT_MODES: Final = frozenset({"1", "L", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"})


def decode_image(data: bytes, *, max_bytes: int, max_pixels: int, field: str = "") -> Image.Image:
    """Decodes an encoded image file into an 8-bit RGB Pillow image, refusing anything unsafe or unreadable.

    Args:
        data: The file's bytes (PNG, JPEG, WebP, BMP, GIF or TIFF).
        max_bytes: Largest accepted file size.
        max_pixels: Largest accepted width x height, checked from the header before pixels are decoded.
        field: The request field path reported in errors, e.g. ``"images[2].encoded"``.

    Returns:
        A loaded RGB image (frame 0, EXIF orientation applied).

    Raises:
        InvalidArgumentError: Empty, unknown format, zero size, truncated or corrupt data, unsupported mode.
        ResourceExhaustedError: Over the byte or pixel cap (including Pillow's decompression-bomb limit).
    """
    if not data:
        raise InvalidArgumentError("the image is empty", field=field)
    if len(data) > max_bytes:
        raise ResourceExhaustedError(f"the image is {len(data)} bytes; the limit is {max_bytes}", field=field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        message = f"the image claims too many pixels (the limit is {max_pixels})"
        raise ResourceExhaustedError(message, field=field) from exc
    except UnidentifiedImageError as exc:
        raise InvalidArgumentError(
            f"not a readable image; accepted formats: {', '.join(ALLOWED_FORMATS)}", field=field
        ) from exc
    except _DECODE_ERRORS as exc:
        raise InvalidArgumentError("the image header is corrupt", field=field) from exc
    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise InvalidArgumentError(f"the image has zero size ({width}x{height})", field=field)
        if width * height > max_pixels:
            raise ResourceExhaustedError(
                f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}", field=field
            )
        try:
            img.load()  # frame 0: Image.open leaves animations and multi-page files on their first frame
        except _DECODE_ERRORS as exc:
            raise InvalidArgumentError("the image is truncated or corrupt", field=field) from exc
        try:
            oriented = ImageOps.exif_transpose(img)
        except _DECODE_ERRORS as exc:
            raise InvalidArgumentError("the image's EXIF orientation data is corrupt", field=field) from exc
        return to_rgb(oriented, field=field)


def to_rgb(img: Image.Image, *, field: str = "") -> Image.Image:
    """Brings a loaded image of any supported mode to 8-bit RGB with explicit, documented rules.

    - Alpha (RGBA, LA, PA, and palette images with a transparent colour) is composited onto white, as a browser
      shows the image on a white page; fully transparent pixels become white. Models never see an alpha channel.
    - 16-bit grey (``I;16*``) is scaled linearly from 0..65535 to 0..255 (Pillow's own conversion would clip).
      32-bit integer grey (``I``, which Pillow produces for some 16-bit files) is treated the same way after
      clipping to 0..65535.
    - CMYK, YCbCr, LAB, HSV, 1-bit and 8-bit grey use Pillow's conversion to RGB (no ICC colour management).
    - 32-bit float images (``F``) are refused: their range is unknown; send raw pixels instead.

    Args:
        img: A loaded Pillow image.
        field: The request field path reported in errors.

    Returns:
        An RGB image of the same size.

    Raises:
        InvalidArgumentError: For modes without a defined conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode == "P":
        mode = "RGBA" if "transparency" in img.info else "RGB"
        img = img.convert(mode)
        if mode == "RGB":
            return img
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        out = Image.new("RGB", rgba.size, _WHITE)
        out.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))
        return out
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        wide = np.asarray(img).astype(np.int64)
        grey = (np.clip(wide, 0, 65535) * 255 + 32767) // 65535
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    if mode in _DIRECT_MODES:
        try:
            return img.convert("RGB")
        except ValueError as exc:
            raise InvalidArgumentError(f"cannot convert image mode {mode} to RGB", field=field) from exc
    raise InvalidArgumentError(
        f"unsupported image mode {mode}; send 8/16-bit grey, RGB(A), CMYK or raw pixels", field=field
    )


_ITEMSIZE: Final[dict[str, int]] = {"float32": 4, "float16": 2, "uint8": 1}


def pixels_to_tensor(
    data: bytes, shape: Sequence[int], dtype: PixelDType, *, max_pixels: int, field: str = ""
) -> torch.Tensor:
    """Validates a raw RGB pixel array and returns it as a float32 tensor ``[3, H, W]`` in ``[0, 1]``.

    Args:
        data: Little-endian, C-order array bytes.
        shape: Must be ``[3, H, W]`` with ``H, W >= 1``.
        dtype: ``float32`` / ``float16`` (values in ``[0, 1]``, finite) or ``uint8`` (0..255).
        max_pixels: Largest accepted ``H * W``.
        field: The request field path of the tensor, e.g. ``"images[0].pixels"``.

    Raises:
        InvalidArgumentError: Wrong shape, byte length, non-finite or out-of-range values, unknown dtype.
        ResourceExhaustedError: More than ``max_pixels`` pixels.
    """
    if dtype not in _ITEMSIZE:
        raise InvalidArgumentError(
            f"raw pixels must be FLOAT32, FLOAT16 or UINT8, not {dtype}", field=f"{field}.encoding"
        )
    dims = [int(d) for d in shape]
    if len(dims) != 3 or dims[0] != 3:
        raise InvalidArgumentError(f"raw pixels must have shape [3, H, W], got {dims}", field=f"{field}.shape")
    _, height, width = dims
    if height <= 0 or width <= 0:
        raise InvalidArgumentError(f"raw pixels have zero size ({width}x{height})", field=f"{field}.shape")
    if height * width > max_pixels:
        raise ResourceExhaustedError(
            f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
            field=f"{field}.shape",
        )
    expected = 3 * height * width * _ITEMSIZE[dtype]
    if len(data) != expected:
        raise InvalidArgumentError(
            f"raw pixels of shape {dims} as {dtype} need {expected} bytes, got {len(data)}", field=f"{field}.data"
        )
    array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(3, height, width)
    if dtype == "uint8":
        values = array.astype(np.float32) / 255.0
    else:
        values = array.astype(np.float32)
        if not np.isfinite(values).all():
            raise InvalidArgumentError("raw pixels contain NaN or infinity", field=f"{field}.data")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise InvalidArgumentError(
                f"raw float pixels must lie in [0, 1], got [{low:g}, {high:g}]", field=f"{field}.data"
            )
    return torch.from_numpy(values)
