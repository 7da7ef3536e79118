"""The SDK's values and helpers without a server: map arithmetic, geometry, decoding, and the errors they raise."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import camserve
import numpy as np
import pytest
from camserve import gallery, render
from camserve._decode import decode_tensor
from camserve_proto.camserve.v1 import explain_pb2
from conftest import tensor
from PIL import Image


def bilinear_reference(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Half-pixel-centre bilinear upsampling (PyTorch's align_corners=False), written out in numpy."""
    ih, iw = a.shape
    ys = np.clip((np.arange(h) + 0.5) * ih / h - 0.5, 0, ih - 1)
    xs = np.clip((np.arange(w) + 0.5) * iw / w - 0.5, 0, iw - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, ih - 1), np.minimum(x0 + 1, iw - 1)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = a[y0][:, x0] * (1 - wx) + a[y0][:, x1] * wx
    bottom = a[y1][:, x0] * (1 - wx) + a[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def test_map_upsample_is_bilinear() -> None:
    rng = np.random.default_rng(3)
    a = rng.random((7, 7)).astype(np.float32)
    m = camserve.Map("gradcam", "l", 0, a)
    up = m.upsample((224, 168))
    assert isinstance(up, camserve.Map) and up.shape == (224, 168) and up.key == m.key
    np.testing.assert_allclose(up.array, bilinear_reference(a, 224, 168), atol=1e-5)
    g = camserve.Map("saliency", "", 0, rng.random((3, 5, 5)).astype(np.float32))
    assert g.upsample((10, 20)).shape == (3, 10, 20)
    with pytest.raises(camserve.InvalidArgument):
        m.upsample((0, 5))


def test_map_normalized_reduce_rgb_and_array_protocol() -> None:
    a = np.array([[1.0, 3.0], [5.0, 9.0]], np.float32)
    m = camserve.Map("gradcam", "l", 0, a)
    np.testing.assert_allclose(m.normalized().array, [[0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(camserve.Map("x", "", 0, np.full((2, 2), 4.0, np.float32)).normalized().array, 0)
    assert np.asarray(m) is m.array and np.asarray(m, dtype=np.float64).dtype == np.float64
    assert m.reduce("abs_max") is m
    g = np.zeros((3, 1, 3), np.float32)
    g[:, 0, 0] = [1.0, -2.0, 0.5]
    g[:, 0, 1] = [-3.0, 0.0, 0.0]
    g[:, 0, 2] = [0.0, 0.0, 0.0]
    gm = camserve.Map("saliency", "", 0, g)
    np.testing.assert_allclose(gm.reduce("abs_max").array, [[2.0, 3.0, 0.0]])
    np.testing.assert_allclose(gm.reduce("positive").array, [[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(gm.reduce("negative").array, [[2.0, 3.0, 0.0]])
    np.testing.assert_allclose(gm.reduce("luminance").array, [[0.299 + 2 * 0.587 + 0.5 * 0.114, 3 * 0.299, 0]])
    np.testing.assert_allclose(gm.heatmap().ravel(), [2 / 3, 1.0, 0.0])
    rgb = gm.rgb("all")
    assert rgb.shape == (1, 3, 3)
    np.testing.assert_allclose(rgb[0, 2], 0.5)  # zero gradient is mid-grey
    np.testing.assert_allclose(rgb[0, 1], [0.0, 0.5, 0.5])  # -3 is the largest magnitude: fully dark red
    np.testing.assert_allclose(gm.rgb("absolute")[0, 1], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(gm.rgb("positive")[0, 0], [1.0, 0.0, 0.5])
    with pytest.raises(camserve.InvalidArgument):
        m.rgb()
    with pytest.raises(camserve.InvalidArgument):
        gm.reduce("median")


def test_geometry_to_original_places_map_on_crop() -> None:
    g = camserve.Geometry(original_size=(40, 60), crop=camserve.Box(10, 0, 50, 40), input_size=(32, 32))
    m = camserve.Map("gradcam", "l", 0, np.ones((4, 4), np.float32))
    out = g.to_original(m, fill=np.nan)
    assert out.shape == (40, 60)
    assert np.isnan(out[:, :10]).all() and np.isnan(out[:, 50:]).all()
    np.testing.assert_allclose(out[:, 10:50], 1.0)
    three = g.to_original(np.ones((3, 8, 8), np.float32))
    assert three.shape == (3, 40, 60) and three[:, :, :10].sum() == 0


def test_decode_tensor_png_rgb_and_uint8_range() -> None:
    a = np.linspace(-2, 2, 3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    for enc in (explain_pb2.PNG, explain_pb2.UINT8):
        out = decode_tensor(tensor(a, enc), "x")
        assert out.shape == (3, 4, 5)
        np.testing.assert_allclose(out, a, atol=4 / 255 + 1e-6)
    bad = explain_pb2.Tensor(shape=[2, 2], encoding=explain_pb2.PNG, data=b"not png")
    with pytest.raises(camserve.Internal, match="PNG"):
        decode_tensor(bad, "x")
    with pytest.raises(camserve.Internal, match="empty shape"):
        decode_tensor(explain_pb2.Tensor(shape=[], data=b""), "x")


def test_decode_tensor_applies_the_float16_scale() -> None:
    # The server scales FLOAT16 maps whose largest |value| is outside float16's normal range by a power of two.
    a = np.array([[1.5e-7, -3.0e-8], [0.0, 6.0e-8]], dtype=np.float32)
    scale = 2.0**-23
    stored = (a / scale).astype("<f2").tobytes()
    message = explain_pb2.Tensor(shape=[2, 2], encoding=explain_pb2.FLOAT16, data=stored, scale=scale)
    np.testing.assert_allclose(decode_tensor(message, "x"), a, rtol=1e-3)
    unscaled = explain_pb2.Tensor(shape=[2, 2], encoding=explain_pb2.FLOAT16, data=a.astype("<f2").tobytes())
    np.testing.assert_array_equal(decode_tensor(unscaled, "x"), a.astype(np.float16).astype(np.float32))


def _result(geometry: camserve.Geometry | None = None) -> camserve.ExplainResult:
    maps = [camserve.Map("gradcam", layer, 0, np.ones((2, 2), np.float32)) for layer in ("a", "b")]
    return camserve.ExplainResult(
        index=0,
        id="0",
        predictions=(),
        maps=types.MappingProxyType({m.key: m for m in maps}),
        reconstruction=None,
        geometry=geometry,
        timing=camserve.Timing(),
    )


_CAM = camserve.Map("gradcam", "l", 0, np.ones((4, 4), np.float32))
_GRAD = camserve.Map("saliency", "", 0, np.ones((3, 4, 4), np.float32))
_EMPTY_CROP = camserve.Geometry((8, 8), camserve.Box(2, 2, 2, 6), (4, 4))
_PICTURE = np.zeros((4, 4, 3), np.uint8)
_CANVAS = Image.new("RGB", (4, 4))

# Every public helper, given an argument it cannot use: (call, the builtin it also is, the field named).
HELPER_ERRORS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    ("Map(1-D)", lambda: camserve.Map("m", "", 0, np.ones(4, np.float32)), ValueError, "array"),
    ("Map(empty)", lambda: camserve.Map("m", "", 0, np.ones((0, 3), np.float32)), ValueError, "array"),
    ("Map(list)", lambda: camserve.Map("m", "", 0, [[1.0]]), ValueError, "array"),  # type: ignore[arg-type]
    ("upsample(0, 5)", lambda: _CAM.upsample((0, 5)), ValueError, "size"),
    ("upsample('ab')", lambda: _CAM.upsample("ab"), ValueError, "size"),  # type: ignore[arg-type]
    ("reduce(median)", lambda: _GRAD.reduce("median"), ValueError, "reduction"),  # type: ignore[arg-type]
    ("heatmap(median)", lambda: _GRAD.heatmap("median"), ValueError, "reduction"),  # type: ignore[arg-type]
    ("rgb() of 2-D", lambda: _CAM.rgb(), ValueError, "map"),
    ("rgb(percentile=0)", lambda: _GRAD.rgb(percentile=0), ValueError, "percentile"),
    ("rgb(sign)", lambda: _GRAD.rgb("both"), ValueError, "sign"),  # type: ignore[arg-type]
    ("to_original(empty crop)", lambda: _EMPTY_CROP.to_original(_CAM), ValueError, "geometry.crop"),
    ("to_original(1-D)", lambda: _EMPTY_CROP.to_original(np.ones(3)), ValueError, "array"),
    ("result.to_original()", lambda: _result().to_original(_CAM), ValueError, "geometry"),
    ("result.map(missing)", lambda: _result().map("deconvnet"), KeyError, "method"),
    ("result.map(ambiguous)", lambda: _result().map("gradcam"), KeyError, "method"),
    ("colormap(jet)", lambda: render.colormap("jet"), ValueError, "cmap"),
    ("colorize(3-D)", lambda: render.colorize(np.zeros((2, 2, 2))), ValueError, "values"),
    ("overlay(alpha=2)", lambda: render.overlay(_PICTURE, _CAM, alpha=2.0), ValueError, "alpha"),
    ("overlay(cmap)", lambda: render.overlay(_PICTURE, _CAM, cmap="jet"), ValueError, "cmap"),
    ("overlay(1-D map)", lambda: render.overlay(_PICTURE, np.ones(4)), ValueError, "array"),
    ("overlay(image)", lambda: render.overlay(object(), _CAM), ValueError, "image"),
    ("heat_image(empty)", lambda: render.heat_image(np.zeros((0, 0, 3)), _GRAD), ValueError, "image"),
    ("gradient_image(2-D)", lambda: render.gradient_image(_CAM), ValueError, "map"),
    ("display_kind(rgb)", lambda: render.display_kind(_GRAD, "rgb"), ValueError, "gradients"),  # type: ignore[arg-type]
    ("panels([])", lambda: render.panels([]), ValueError, "images"),
    ("panels(height=-1)", lambda: render.panels([_CANVAS], height=-1), ValueError, "height"),
    ("colorbar(0 wide)", lambda: render.colorbar(width=0), ValueError, "size"),
    ("panels(titles)", lambda: render.panels([_CANVAS], ["a", "b"]), ValueError, "titles"),
    ("draw_boxes(3 numbers)", lambda: render.draw_boxes(_CANVAS, [(1, 2, 3)]), ValueError, "boxes[0]"),
    (
        "draw_boxes(nan)",
        lambda: render.draw_boxes(_CANVAS, [(0, 0, np.nan, 1)]),
        ValueError,
        "boxes[0]",
    ),
]


@pytest.mark.parametrize(("name", "call", "builtin", "field"), HELPER_ERRORS, ids=[h[0] for h in HELPER_ERRORS])
def test_helpers_raise_the_sdks_own_errors(
    name: str, call: Callable[[], object], builtin: type[Exception], field: str
) -> None:
    with pytest.raises(camserve.CamserveError) as info:
        call()
    expected = camserve.NotFound if builtin is KeyError else camserve.InvalidArgument
    assert type(info.value) is expected, name
    assert isinstance(info.value, builtin)  # code written against the builtin error keeps working
    assert info.value.field == field and info.value.message


@pytest.mark.parametrize("style", [{"cmap": "jet"}, {"alpha": -1.0}, {"size": 0}, {"gradients": "rgb"}])
def test_gallery_checks_its_style_before_writing(tmp_path: Any, style: dict[str, Any]) -> None:
    with pytest.raises(camserve.InvalidArgument):
        gallery.write([], tmp_path / "out", **style)
    assert not (tmp_path / "out").exists()


def test_draw_boxes_draws_empty_and_inverted_boxes() -> None:
    # a picture shows what it is given; whether a box is a valid region is the server's to say
    image = Image.new("RGB", (10, 10))
    inverted = np.asarray(render.draw_boxes(image, [(8, 8, 2, 2)], width=1))
    assert tuple(inverted[2, 5]) == render.BOX_COLOR and tuple(inverted[5, 5]) == (0, 0, 0)
    empty = np.asarray(render.draw_boxes(image, [(4, 4, 4, 4)], width=1))
    assert tuple(empty[4, 4]) == render.BOX_COLOR
