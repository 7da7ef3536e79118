"""Turns what users hold (paths, bytes, PIL images, numpy arrays) into the contract's ``Image`` message.

How each kind travels, and why:

* **paths and bytes** are sent as the encoded file, untouched: no decode/re-encode on the client, the smallest
  message, and the server applies its one set of decoding rules (format allow-list, EXIF orientation, frame 0 of
  animations, 16-bit and palette conversion, size caps).
* **numpy arrays** are sent as raw pixels (a ``Tensor``), exactly: ``uint8`` as UINT8, floats in [0, 1] as
  FLOAT32, in the contract's ``[3, H, W]`` layout. Arrays are ``H x W x 3`` (RGB) or ``H x W`` (grey, replicated).
* **PIL images** are encoded losslessly as PNG (their pixels as they are: no EXIF rotation is applied, since an
  opened ``Image`` has not been rotated either) and then travel like bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TypeAlias

import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from PIL import Image as PILImage
from PIL import ImageOps

from camserve.errors import InvalidArgument

#: Anything :meth:`camserve.Client.explain` accepts as one image.
ImageLike: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | PILImage.Image | np.ndarray"


def is_single_image(value: object) -> bool:
    """True for one image, False for a sequence of images (list/tuple, or a 4-D numpy batch)."""
    if isinstance(value, list | tuple):
        return False
    return not (isinstance(value, np.ndarray) and value.ndim == 4)


def read_path(path: str | os.PathLike[str], field: str) -> bytes:
    """Reads an image file's bytes, with an error that names the file and the request field."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"no such image file: {p}", field=field) from None
    except IsADirectoryError:
        raise InvalidArgument(f"{p} is a directory, not an image file", field=field) from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read image file {p}: {exc.strerror or exc}", field=field) from None
    if not data:
        raise InvalidArgument(f"image file {p} is empty", field=field)
    return data


def _pixels_tensor(array: np.ndarray, field: str) -> explain_pb2.Tensor:
    """Validates an H x W x 3 (or H x W) array and packs it as a [3, H, W] tensor."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3:
        hint = ""
        if a.ndim == 3 and a.shape[0] == 3:
            hint = " (looks channels-first: pass array.transpose(1, 2, 0))"
        elif a.ndim == 3 and a.shape[2] == 4:
            hint = " (RGBA: pass array[..., :3])"
        raise InvalidArgument(f"image array must be H x W x 3 (RGB) or H x W, got shape {a.shape}{hint}", field=field)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InvalidArgument(f"image array is empty (shape {a.shape})", field=field)
    chw = np.ascontiguousarray(a.transpose(2, 0, 1))
    tensor = explain_pb2.Tensor(shape=list(chw.shape))
    if a.dtype == np.uint8:
        tensor.encoding = explain_pb2.UINT8
        tensor.value_min, tensor.value_max = 0.0, 255.0
        tensor.data = chw.tobytes()
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(chw)):
            raise InvalidArgument("image array has NaN or infinite values", field=field)
        lo, hi = float(chw.min()), float(chw.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidArgument(
                f"float image arrays must hold values in [0, 1], got [{lo:.4g}, {hi:.4g}] "
                "(for 0..255 data pass array.astype(numpy.uint8))",
                field=field,
            )
        tensor.encoding = explain_pb2.FLOAT32
        tensor.data = chw.astype("<f4").tobytes()
    else:
        raise InvalidArgument(
            f"image arrays must be uint8 (0..255) or float in [0, 1], got dtype {a.dtype}", field=field
        )
    return tensor


def _png_bytes(image: PILImage.Image) -> bytes:
    """Encodes a PIL image losslessly as PNG; modes PNG cannot store are converted to RGB first."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="PNG")
    except (OSError, ValueError, KeyError):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def to_image_message(image: object, field: str) -> explain_pb2.Image:
    """Converts one user image into an ``Image`` message (without id/target/regions).

    Args:
        image: A path (``str`` or ``os.PathLike``), encoded bytes, a PIL image or a numpy array.
        field: Where this image sits in the request, e.g. ``"images[3]"``, for error messages.

    Raises:
        InvalidArgument: The value is not an image this client can send (with ``field`` set).
    """
    if isinstance(image, str | os.PathLike):
        return explain_pb2.Image(encoded=read_path(image, field))
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if not data:
            raise InvalidArgument("image bytes are empty", field=field)
        return explain_pb2.Image(encoded=data)
    if isinstance(image, PILImage.Image):
        if image.width == 0 or image.height == 0:
            raise InvalidArgument("PIL image is empty", field=field)
        return explain_pb2.Image(encoded=_png_bytes(image))
    if isinstance(image, np.ndarray):
        return explain_pb2.Image(pixels=_pixels_tensor(image, field))
    hint = " (for several images pass a list, or use explain_many for a stream)" if hasattr(image, "__iter__") else ""
    raise InvalidArgument(
        f"cannot send {type(image).__name__} as an image: pass a file path, encoded bytes, a PIL image or a "
        f"numpy array (H x W x 3){hint}",
        field=field,
    )


def load_rgb(image: object) -> PILImage.Image:
    """Opens any supported image value as an RGB PIL image, oriented as the server sees it (for rendering).

    Files and bytes get their EXIF orientation applied, like the server does; arrays and PIL images are taken as
    they are. Float arrays in [0, 1] are scaled to 0..255.
    """
    if isinstance(image, str | os.PathLike | bytes | bytearray | memoryview):
        data = read_path(image, "image") if isinstance(image, str | os.PathLike) else bytes(image)
        try:
            with PILImage.open(io.BytesIO(data)) as opened:
                oriented = ImageOps.exif_transpose(opened)
                return (oriented if oriented is not None else opened).convert("RGB")
        except (OSError, ValueError) as exc:
            raise InvalidArgument(f"cannot decode image: {exc}", field="image") from None
    if isinstance(image, PILImage.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] != 3 or a.size == 0:
            raise InvalidArgument(
                f"image array must be a non-empty H x W x 3 or H x W, got shape {a.shape}", field="image"
            )
        if np.issubdtype(a.dtype, np.floating):
            a = np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5
        return PILImage.fromarray(np.ascontiguousarray(a, dtype=np.uint8))
    raise InvalidArgument(f"cannot use {type(image).__name__} as an image", field="image")
