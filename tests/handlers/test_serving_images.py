"""Defensive image decoding, raw pixel validation and preprocessing geometry (handlers/serving/_images.py)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, PngImagePlugin
from serving_helpers import encode, gradient_rgb, png_bytes

from handlers.engine.errors import InvalidArgumentError, ResourceExhaustedError
from handlers.preprocess import Preprocessor
from handlers.serving._images import decode_image, pixels_to_tensor, to_rgb

CAPS = {"max_bytes": 8_388_608, "max_pixels": 40_000_000}


def decode(data: bytes, **caps: int) -> Image.Image:
    return decode_image(data, **{**CAPS, **caps}, field="images[0].encoded")


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def test_png_round_trip_is_exact() -> None:
    img = gradient_rgb(40, 30)
    out = decode(encode(img))
    assert out.mode == "RGB" and out.size == (40, 30)
    assert np.array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_allowed_formats_decode_to_rgb(fmt: str) -> None:
    out = decode(encode(gradient_rgb(33, 21), fmt))
    assert out.mode == "RGB" and out.size == (33, 21)


def test_oversize_bytes_refused_before_parsing() -> None:
    data = png_bytes(64, 64)
    with pytest.raises(ResourceExhaustedError) as err:
        decode(data, max_bytes=len(data) - 1)
    assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.field == "images[0].encoded"
    assert str(len(data)) in err.value.message


def test_empty_bytes() -> None:
    with pytest.raises(InvalidArgumentError, match="empty"):
        decode(b"")


def test_decompression_bomb_header_refused_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # A 1-bit 10000x10000 PNG compresses to ~12 KB but claims 100 M pixels.
    bomb = encode(Image.new("1", (10_000, 10_000)), optimize=True)
    assert len(bomb) < 16_000

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    before = Image.MAX_IMAGE_PIXELS
    # Above Pillow's own limit: its DecompressionBombWarning becomes our error.
    with pytest.raises(ResourceExhaustedError) as err:
        decode(bomb)
    assert err.value.field == "images[0].encoded"
    # Our cap raised above Pillow's: Pillow's warning (> MAX_IMAGE_PIXELS) and error (> 2x) still refuse it.
    with pytest.raises(ResourceExhaustedError):
        decode(bomb, max_pixels=10**10)
    huge = encode(Image.new("1", (15_000, 15_000)), optimize=True)
    with pytest.raises(ResourceExhaustedError):
        decode(huge, max_pixels=10**10)
    # Below Pillow's limit but above ours: our header check.
    medium = encode(Image.new("1", (3000, 3000)), optimize=True)
    with pytest.raises(ResourceExhaustedError, match="9000000 pixels"):
        decode(medium, max_pixels=1_000_000)
    assert before == Image.MAX_IMAGE_PIXELS


def test_pixel_cap_is_inclusive() -> None:
    assert decode(png_bytes(10, 10), max_pixels=100).size == (10, 10)
    with pytest.raises(ResourceExhaustedError):
        decode(png_bytes(10, 11), max_pixels=100)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX"])
def test_formats_outside_the_allow_list_are_refused(fmt: str) -> None:
    data = encode(gradient_rgb(16, 16), fmt)
    assert Image.open(__import__("io").BytesIO(data)).format == fmt  # Pillow itself would read it
    with pytest.raises(InvalidArgumentError, match="accepted formats"):
        decode(data)


def test_garbage_bytes_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        decode(b"this is not an image at all" * 10)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_refused(fmt: str) -> None:
    data = encode(gradient_rgb(64, 64, seed=3), fmt)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(InvalidArgumentError, match="truncated or corrupt"):
        decode(data[: len(data) * 2 // 3])


def test_zero_size_is_refused() -> None:
    ihdr = struct.pack(">IIBBBBB", 0, 10, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")
    with pytest.raises(InvalidArgumentError) as err:
        decode(data)
    assert err.value.code == "INVALID_ARGUMENT"


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    out = np.asarray(decode(encode(img)))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_thirty_two_bit_integer_grey_is_read_as_sixteen_bit() -> None:
    img = Image.fromarray(np.array([[-5, 0, 65535, 70000]], dtype=np.int32))
    assert img.mode == "I"
    out = np.asarray(to_rgb(img))
    assert out[0, :, 0].tolist() == [0, 0, 255, 255]


def test_float_images_are_refused() -> None:
    img = Image.fromarray(np.zeros((4, 4), dtype=np.float32))
    assert img.mode == "F"
    with pytest.raises(InvalidArgumentError, match="mode F"):
        decode(encode(img, "TIFF"))


def test_cmyk_jpeg_is_converted() -> None:
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    out = decode(encode(cyan, "JPEG", quality=95))
    r, g, b = np.asarray(out)[8, 8].tolist()
    assert r < 20 and g > 235 and b > 235


def test_palette_with_transparency_is_composited_on_white() -> None:
    img = Image.new("P", (4, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    img.putdata([0, 1, 1, 0])
    img.info["transparency"] = 1
    out = np.asarray(decode(encode(img, transparency=1)))
    assert out[0].tolist() == [[255, 0, 0], [255, 255, 255], [255, 255, 255], [255, 0, 0]]


def test_rgba_is_composited_on_white() -> None:
    img = Image.new("RGBA", (2, 1))
    img.putdata([(0, 0, 0, 255), (0, 0, 0, 0)])
    half = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    assert np.asarray(decode(encode(img)))[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    assert np.asarray(decode(encode(half)))[0, 0].tolist() == [127, 127, 127]


def test_animated_gif_uses_frame_zero() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(__import__("io").BytesIO(data)) as check:
        assert check.n_frames == 3
    out = np.asarray(decode(data))
    assert out[4, 4].tolist() == [255, 0, 0]


def test_exif_orientation_is_applied() -> None:
    # Stored landscape 40x20: left half red, right half blue. Orientation 6 = rotate 90 degrees clockwise to show,
    # so the shown image is portrait 20x40 with the red half on top.
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = decode(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    arr = np.asarray(out).astype(int)
    assert arr[5, 10, 0] > 200 and arr[5, 10, 2] < 60
    assert arr[35, 10, 2] > 200 and arr[35, 10, 0] < 60


# ---- raw pixels


def test_raw_pixels_all_dtypes() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((3, 5, 7), dtype=np.float32)
    t32 = pixels_to_tensor(values.astype("<f4").tobytes(), [3, 5, 7], "float32", max_pixels=100)
    assert torch.equal(t32, torch.from_numpy(values))
    t16 = pixels_to_tensor(values.astype("<f2").tobytes(), [3, 5, 7], "float16", max_pixels=100)
    assert torch.allclose(t16, t32, atol=1e-3)
    as_u8 = (values * 255).round().astype(np.uint8)
    t8 = pixels_to_tensor(as_u8.tobytes(), [3, 5, 7], "uint8", max_pixels=100)
    assert torch.allclose(t8, torch.from_numpy(as_u8.astype(np.float32) / 255))
    assert t8.dtype == torch.float32 and t8.shape == (3, 5, 7)


@pytest.mark.parametrize(
    ("shape", "nbytes", "field", "pattern"),
    [
        ([4, 5, 5], 400, "images[1].pixels.shape", "shape"),
        ([3, 25], 300, "images[1].pixels.shape", "shape"),
        ([3, 0, 5], 0, "images[1].pixels.shape", "zero size"),
        ([3, 5, 5], 299, "images[1].pixels.data", "need 300 bytes"),
    ],
)
def test_raw_pixels_bad_shape_or_length(shape: list[int], nbytes: int, field: str, pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern) as err:
        pixels_to_tensor(b"\0" * nbytes, shape, "float32", max_pixels=1000, field="images[1].pixels")
    assert err.value.field == field


def test_raw_pixels_values_checked() -> None:
    bad = np.zeros((3, 2, 2), dtype=np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidArgumentError, match="NaN"):
        pixels_to_tensor(bad.tobytes(), [3, 2, 2], "float32", max_pixels=100)
    bad[0, 0, 0] = 1.5
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\]"):
        pixels_to_tensor(bad.tobytes(), [3, 2, 2], "float32", max_pixels=100)
    with pytest.raises(ResourceExhaustedError):
        pixels_to_tensor(b"\0" * 3 * 11 * 10, [3, 11, 10], "uint8", max_pixels=100)


# ---- preprocessing


def test_input_sized_image_reaches_the_model_bit_exact() -> None:
    pre = Preprocessor((64, 64), 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    img = gradient_rgb(64, 64)
    tensor, geometry = pre.from_pil(img)
    expected = (torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    assert torch.equal(tensor, expected)
    assert geometry.crop == (0, 0, 64, 64) and (geometry.input_width, geometry.input_height) == (64, 64)


def test_imagenet_style_crop_geometry() -> None:
    pre = Preprocessor((224, 224), 256, (0.0,) * 3, (1.0,) * 3)
    # 500x375: the shorter side 375 -> 256 (scale 0.6827); a 224 crop is 328 original pixels, centred.
    assert pre.crop_box(500, 375) == (86, 23, 414, 351)
    assert pre.crop_box(375, 500) == (23, 86, 351, 414)
    tensor, geometry = pre.from_pil(gradient_rgb(500, 375))
    assert tensor.shape == (3, 224, 224)
    assert (geometry.original_width, geometry.original_height) == (500, 375)
    assert geometry.crop == (86, 23, 414, 351)


def test_raw_pixels_and_pil_paths_agree() -> None:
    pre = Preprocessor((32, 32), 40, (0.0,) * 3, (1.0,) * 3)
    img = gradient_rgb(90, 60, seed=4)
    from_pil, g1 = pre.from_pil(img)
    raw = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    from_raw, g2 = pre.from_tensor(raw)
    assert g1 == g2
    assert (from_pil - from_raw).abs().mean() < 0.01


def test_preprocessor_rejects_inconsistent_settings() -> None:
    with pytest.raises(ValueError, match="resize"):
        Preprocessor((224, 224), 200, (0.0,) * 3, (1.0,) * 3)
    with pytest.raises(ValueError, match="std"):
        Preprocessor((8, 8), 8, (0.0,) * 3, (1.0, 0.0, 1.0))
