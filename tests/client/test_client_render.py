"""Rendering: vendored colormaps, overlays (placed by geometry), heat/gradient pictures, panels, the HTML gallery."""

from __future__ import annotations

import types
from html.parser import HTMLParser
from pathlib import Path

import camserve
import numpy as np
import pytest
from camserve import gallery, render
from camserve._maps import MapKey
from PIL import Image

RED = (200, 30, 30)


def result(
    maps: list[camserve.Map],
    *,
    predictions: tuple[camserve.Prediction, ...] = (camserve.Prediction(3, "star", 0.8, 4.0),),
    geometry: camserve.Geometry | None = None,
    reconstruction: np.ndarray | None = None,
    error: camserve.CamserveError | None = None,
) -> camserve.ExplainResult:
    return camserve.ExplainResult(
        index=0,
        id="0",
        predictions=predictions,
        maps=types.MappingProxyType({m.key: m for m in maps}),
        reconstruction=reconstruction,
        geometry=geometry,
        timing=camserve.Timing(explain_ms=12.0, round_trip_ms=20.0),
        model_name="m",
        error=error,
    )


@pytest.mark.parametrize("name", render.COLORMAPS)
def test_vendored_colormaps_match_matplotlib(name: str) -> None:
    mpl = pytest.importorskip("matplotlib")
    reference = np.asarray(mpl.colormaps[name](np.linspace(0, 1, 256))[:, :3]) * 255
    table = render.colormap(name)
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert np.abs(table.astype(float) - reference).max() <= 0.5 + 1e-9


def test_unknown_colormap() -> None:
    with pytest.raises(camserve.InvalidArgument, match="inferno"):
        render.colormap("jet")


def test_colorize_maps_range_onto_table_ends() -> None:
    out = render.colorize(np.array([[2.0, 4.0, 6.0]]))
    table = render.colormap("inferno")
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], table[0])
    np.testing.assert_array_equal(out[0, 1], table[128])
    np.testing.assert_array_equal(out[0, 2], table[255])
    with pytest.raises(camserve.InvalidArgument):
        render.colorize(np.zeros((2, 2, 2)))


def test_overlay_weight_follows_the_map() -> None:
    image = np.zeros((4, 8, 3), np.uint8)
    image[...] = RED
    heat = np.zeros((4, 8), np.float32)
    heat[:, 4:] = 1.0  # right half hot, left half zero
    out = np.asarray(render.overlay(image, heat, alpha=0.5), dtype=np.float64)
    np.testing.assert_array_equal(out[:, 0], np.tile(RED, (4, 1)))  # zero: the image unchanged
    top = render.colormap("inferno")[255].astype(np.float64)
    np.testing.assert_allclose(out[:, -1], np.tile(0.5 * np.array(RED) + 0.5 * top, (4, 1)), atol=1.0)
    with pytest.raises(camserve.InvalidArgument):
        render.overlay(image, heat, alpha=2.0)


def test_overlay_uses_geometry_to_place_the_map_on_the_crop() -> None:
    original = np.full((40, 60, 3), 100, np.uint8)
    g = camserve.Geometry(original_size=(40, 60), crop=camserve.Box(10, 0, 50, 40), input_size=(8, 8))
    m = camserve.Map("gradcam", "l", 0, np.ones((2, 2), np.float32))  # constant: normalises to 0 -> image only
    hot = camserve.Map("gradcam", "l", 0, np.array([[0.0, 1.0], [1.0, 1.0]], np.float32))
    out = np.asarray(render.overlay(original, m, geometry=g))
    assert out.shape == (40, 60, 3)
    np.testing.assert_array_equal(out[:, :10], round(100 * render.OUTSIDE_DIM))  # outside the crop: dimmed
    np.testing.assert_array_equal(out[:, 10:50], 100)  # inside, zero map: the image
    hot_out = np.asarray(render.overlay(original, hot, geometry=g), dtype=int)
    assert (hot_out[30:, 40:50] != 100).any() and (hot_out[:, 50:] == round(100 * render.OUTSIDE_DIM)).all()
    small = render.overlay(original, hot, geometry=g, size=30)
    assert small.size == (30, 20)


def test_gradient_image_zero_is_grey_and_heat_image_size() -> None:
    g = np.zeros((3, 6, 6), np.float32)
    g[0, 0, 0] = 1.0
    g[1, 5, 5] = -1.0
    pic = np.asarray(render.gradient_image(camserve.Map("guided_backprop", "", 0, g)))
    assert pic.shape == (6, 6, 3)
    assert tuple(pic[3, 3]) == (128, 128, 128) and pic[0, 0, 0] == 255 and pic[5, 5, 1] == 0
    heat = render.heat_image(np.full((6, 6, 3), 90, np.uint8), camserve.Map("saliency", "", 0, g), size=12)
    assert heat.size == (12, 12)


def test_display_follows_the_maps_shape_not_its_method() -> None:
    g = np.zeros((3, 6, 6), np.float32)
    g[0, 0, 0] = 1.0
    for method, layer in (("saliency", ""), ("guided_backprop", ""), ("guided_gradcam", "x"), ("area_guided", "")):
        m = camserve.Map(method, layer, 0, g)
        assert render.display_kind(m) == "heat" and render.display_kind(m, "gradient") == "gradient"
        heat = np.asarray(render.render_map(np.full((6, 6, 3), 90, np.uint8), m))
        rgb = np.asarray(render.render_map(np.full((6, 6, 3), 90, np.uint8), m, gradients="gradient"))
        np.testing.assert_array_equal(rgb, np.asarray(render.gradient_image(m)))
        assert tuple(rgb[3, 3]) == (128, 128, 128) and tuple(heat[3, 3]) == (45, 45, 45)  # grey zero; dimmed image
    for method in ("gradcam", "guided_backprop", "area_gradcam"):  # a 2-D map is an overlay whatever its name
        assert render.display_kind(camserve.Map(method, "x", 0, g[0]), "gradient") == "overlay"


def test_panels_and_boxes() -> None:
    a = Image.new("RGB", (20, 10), (255, 0, 0))
    b = Image.new("RGB", (10, 10), (0, 255, 0))
    out = render.panels([a, b], ["red", "a green square with a long title"], height=20, gap=4)
    assert out.height > 20 and out.width == 40 + 20 + 3 * 4
    with pytest.raises(camserve.InvalidArgument):
        render.panels([a], ["x", "y"])
    boxed = np.asarray(render.draw_boxes(Image.new("RGB", (20, 20)), [(5, 5, 15, 15)], width=1))
    assert tuple(boxed[5, 10]) == render.BOX_COLOR and tuple(boxed[10, 10]) == (0, 0, 0)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def check_page(index: Path) -> tuple[list[dict[str, str | None]], str]:
    """Every <img> exists, decodes as PNG, and has the width/height the page says."""
    parser = _Images()
    parser.feed(index.read_text())
    for img in parser.images:
        path = index.parent / str(img["src"])
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert (str(im.width), str(im.height)) == (img["width"], img["height"]), path
        assert img.get("alt")
    return parser.images, " ".join(parser.text)


def test_gallery_classifier_vae_and_error(tmp_path: Path) -> None:
    photo = np.zeros((40, 60, 3), np.uint8)
    photo[10:30, 20:40] = 255
    g = camserve.Geometry(original_size=(40, 60), crop=camserve.Box(10, 0, 50, 40), input_size=(16, 16))
    rng = np.random.default_rng(0)
    cls_maps = [
        camserve.Map("gradcam", "layer1", 3, rng.random((4, 4)).astype(np.float32)),
        camserve.Map("gradcam", "layer2", 3, rng.random((2, 2)).astype(np.float32)),
        camserve.Map("gradcam++", "layer2", 3, rng.random((2, 2)).astype(np.float32)),
        camserve.Map("saliency", "", 3, rng.normal(size=(3, 16, 16)).astype(np.float32)),
        camserve.Map("guided_backprop", "", 3, rng.normal(size=(3, 16, 16)).astype(np.float32)),
    ]
    vae_maps = [
        camserve.Map("area_saliency", "", r, rng.normal(size=(3, 16, 16)).astype(np.float32)) for r in range(2)
    ] + [camserve.Map("area_gradcam", "enc.2", r, rng.random((4, 4)).astype(np.float32)) for r in range(2)]
    # VAE anomaly maps: one per image (target -1), in a "whole image" column without a region box.
    vae_maps += [
        camserve.Map("anomaly_recon_error", "", -1, rng.random((16, 16)).astype(np.float32)),
        camserve.Map("anomaly_latent", "enc.2", -1, rng.random((4, 4)).astype(np.float32)),
    ]
    entries = iter(
        [
            gallery.Entry("photo.png", photo, result(cls_maps, geometry=g)),
            gallery.Entry(
                "shape.png",
                np.zeros((16, 16, 3), np.uint8),
                result(vae_maps, predictions=(), reconstruction=np.full((16, 16, 3), 0.5, np.float32)),
                regions=[(0, 0, 8, 8), (8, 8, 16, 16)],
            ),
            gallery.Entry("broken.png", photo, result([], error=camserve.InvalidArgument("bad", field="f"))),
            gallery.Entry("garbage.png", b"BAD", result([], error=camserve.InvalidArgument("cannot decode"))),
        ]
    )
    index = gallery.write(entries, tmp_path / "out", title="test <gallery>")
    images, text = check_page(index)
    assert "Gradient images" not in text  # the legend explains only what the page shows
    assert len(images) == 1 + (1 + 5) + (3 + 4 + 2) + 1  # colorbar; classifier; vae (original, input, rec); error
    assert "test <gallery>" in text  # escaped in HTML, intact as text
    for needle in ("layer1", "layer2", "input", "gradcam++", "star (3)", "region R1 (8, 8, 16, 16)", "enc.2"):
        assert needle in text, needle
    assert "whole image" in text and "region R-1" not in text
    vae_files = {p.name for p in (tmp_path / "out" / "gallery" / "001_shape").iterdir()}
    assert {"anomaly_recon_error_input_image.png", "anomaly_latent_enc.2_image.png"} <= vae_files
    assert "InvalidArgument: bad (field f)" in text
    assert "InvalidArgument: cannot decode" in text  # an unreadable image: its error, no picture
    names = sorted(p.name for p in (tmp_path / "out" / "gallery" / "000_photo").iterdir())
    assert "gradcampp_layer2_t3.png" in names and "gradcam_layer2_t3.png" in names
    assert not list((tmp_path / "out").glob(".index.html.part"))


def test_gallery_pictures_are_sized(tmp_path: Path) -> None:
    m = camserve.Map("gradcam", "l", 0, np.eye(4, dtype=np.float32))
    index = gallery.write([gallery.Entry("x", np.zeros((32, 64, 3), np.uint8), result([m]))], tmp_path, size=100)
    images, _ = check_page(index)
    assert {(i["width"], i["height"]) for i in images[1:]} == {("100", "50")}
    assert MapKey("gradcam", "l", 0) in result([m]).maps


def test_gallery_draws_gradients_as_asked(tmp_path: Path) -> None:
    g = np.zeros((3, 8, 8), np.float32)
    g[0, 2, 2] = 1.0
    entry = gallery.Entry("x", np.full((8, 8, 3), 90, np.uint8), result([camserve.Map("guided_backprop", "", 3, g)]))
    for gradients in ("heat", "gradient"):
        index = gallery.write([entry], tmp_path / gradients, size=8, gradients=gradients)
        images, text = check_page(index)
        (picture,) = (i for i in images if "guided_backprop" in str(i["src"]))
        with Image.open(index.parent / str(picture["src"])) as im:
            expected = render.render_map(entry.image, entry.result.maps[MapKey("guided_backprop", "", 3)], size=8,
                                         gradients=gradients)  # fmt: skip
            np.testing.assert_array_equal(np.asarray(im.convert("RGB")), np.asarray(expected))
        assert ("Gradient images" in text) == (gradients == "gradient")


def test_attention_maps_at_the_input_are_overlays_in_the_input_column(tmp_path: Path) -> None:
    """Attention rollout gives one [h, w] patch-grid map for the whole model (layer ""): an overlay, like a CAM."""
    rng = np.random.default_rng(1)
    maps = [
        camserve.Map("attention_rollout", "", 3, rng.random((4, 4)).astype(np.float32)),
        camserve.Map("gradient_attention", "", 3, rng.random((4, 4)).astype(np.float32)),
        camserve.Map("eigencam", "encoder.layers.encoder_layer_1.ln_1", 3, rng.random((4, 4)).astype(np.float32)),
    ]
    for m in maps:
        assert render.display_kind(m) == "overlay"
        assert render.render_map(np.zeros((16, 16, 3), np.uint8), m).size == (16, 16)
    index = gallery.write([gallery.Entry("vit.png", np.zeros((16, 16, 3), np.uint8), result(maps))], tmp_path)
    images, text = check_page(index)
    assert len(images) == 1 + 1 + 3  # colorbar; original; three maps
    for needle in (
        "attention_rollout",
        "gradient_attention",
        "eigencam",
        "input",
        "encoder.layers.encoder_layer_1.ln_1",
    ):
        assert needle in text, needle
    names = {p.name for p in (tmp_path / "gallery" / "000_vit").iterdir()}
    assert {"attention_rollout_input_t3.png", "gradient_attention_input_t3.png"} <= names
