"""Defensive image decoding and the preprocessing that turns a caller's picture into a model input.

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

Preprocessing (:class:`Preprocessor`) resizes the shorter side to ``resize`` and centre-crops ``input_size``; the crop
is computed as an integer box in *original* pixel coordinates and resampled to the input size in one step, so the
:class:`Geometry` reported to the caller is exact: the model saw exactly ``crop`` of the original, stretched to the
input size.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from handlers.engine.errors import InvalidArgumentError, ResourceExhaustedError

__all__ = [
    "ALLOWED_FORMATS",
    "Geometry",
    "PixelDType",
    "Preprocessor",
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


@dataclass(frozen=True)
class Geometry:
    """Where the model input came from in the caller's image.

    Attributes:
        original_width: Width of the image as sent, after EXIF orientation.
        original_height: Height of the image as sent, after EXIF orientation.
        crop: ``(x0, y0, x1, y1)``, half-open, in original pixels: the part of the image the model saw.
        input_width: Model input width; the crop was resampled to this size.
        input_height: Model input height.
    """

    original_width: int
    original_height: int
    crop: tuple[int, int, int, int]
    input_width: int
    input_height: int


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


class Preprocessor:
    """Resize-shorter-side, centre-crop and normalise, with the geometry recorded exactly.

    The crop box is chosen in original pixels: the region that a resize of the shorter side to ``resize`` followed
    by a centre crop of ``input_size`` would keep, rounded to whole pixels. That box is then resampled (bilinear,
    antialiased) straight to ``input_size``. When the box already has the input size no resampling happens, so an
    image sent at the model's input size reaches the model bit-exact.

    Args:
        input_size: Model input ``(H, W)``.
        resize: Target of the shorter side before cropping; at least ``max(input_size)``.
        mean: Per-channel mean subtracted after scaling to ``[0, 1]``.
        std: Per-channel standard deviation divided by.

    Raises:
        ValueError: For inconsistent settings (the serving config validates them first with field paths).
    """

    def __init__(self, input_size: tuple[int, int], resize: int, mean: Sequence[float], std: Sequence[float]) -> None:
        height, width = input_size
        if height <= 0 or width <= 0 or resize < max(height, width):
            raise ValueError(f"need resize >= max(input_size) > 0, got resize={resize}, input_size={input_size}")
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError("mean and std need 3 values each, std > 0")
        self.input_size = (height, width)
        self.resize = resize
        self._mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self._std = torch.tensor([float(s) for s in std]).view(3, 1, 1)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """The part ``(x0, y0, x1, y1)`` of a ``width x height`` image that becomes the model input."""
        in_h, in_w = self.input_size
        shorter = min(width, height)
        crop_w = min(width, max(1, round(in_w * shorter / self.resize)))
        crop_h = min(height, max(1, round(in_h * shorter / self.resize)))
        x0 = (width - crop_w) // 2
        y0 = (height - crop_h) // 2
        return (x0, y0, x0 + crop_w, y0 + crop_h)

    def _geometry(self, width: int, height: int, box: tuple[int, int, int, int]) -> Geometry:
        in_h, in_w = self.input_size
        return Geometry(width, height, box, in_w, in_h)

    def unnormalized_from_pil(self, img: Image.Image) -> tuple[torch.Tensor, Geometry]:
        """The cropped, resampled RGB input in ``[0, 1]`` (``[3, H, W]`` float32) and its geometry."""
        width, height = img.size
        box = self.crop_box(width, height)
        in_h, in_w = self.input_size
        if (box[2] - box[0], box[3] - box[1]) == (in_w, in_h):
            cropped = img.crop(box) if box != (0, 0, width, height) else img
        else:
            cropped = img.resize((in_w, in_h), resample=Image.Resampling.BILINEAR, box=box)
        array = np.asarray(cropped.convert("RGB"), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32) / 255.0
        return tensor, self._geometry(width, height, box)

    def unnormalized_from_tensor(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
        """As :meth:`unnormalized_from_pil` for a ``[3, H, W]`` tensor in ``[0, 1]`` (raw pixels)."""
        _, height, width = pixels.shape
        x0, y0, x1, y1 = box = self.crop_box(width, height)
        cropped = pixels[:, y0:y1, x0:x1]
        if tuple(cropped.shape[1:]) != self.input_size:
            cropped = F.interpolate(
                cropped.unsqueeze(0), size=self.input_size, mode="bilinear", align_corners=False, antialias=True
            ).squeeze(0)
        return cropped.contiguous().to(torch.float32), self._geometry(width, height, box)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(pixels - mean) / std`` per channel, for ``[3, H, W]`` or ``[B, 3, H, W]`` tensors."""
        return (pixels - self._mean.to(pixels.device)) / self._std.to(pixels.device)

    def from_pil(self, img: Image.Image) -> tuple[torch.Tensor, Geometry]:
        """The normalised model input ``[3, H, W]`` for an RGB image, and its geometry."""
        pixels, geometry = self.unnormalized_from_pil(img)
        return self.normalize(pixels), geometry

    def from_tensor(self, pixels: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
        """The normalised model input ``[3, H, W]`` for raw pixels in ``[0, 1]``, and its geometry."""
        cropped, geometry = self.unnormalized_from_tensor(pixels)
        return self.normalize(cropped), geometry
