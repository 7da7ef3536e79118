"""explain / describe / models / ping against the in-process fake: what is sent, and the results read back."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import camserve
import numpy as np
import pytest
from camserve._decode import decode_tensor
from camserve_proto.camserve.v1 import explain_pb2
from conftest import CAM, INPUT, LABELS, FakeServer
from PIL import Image

MODEL = "shapes-classifier"


# ---- inputs ----


def test_path_and_bytes_are_sent_encoded_untouched(
    client: camserve.Client, fake: FakeServer, png_file: Path, png_bytes: bytes
) -> None:
    client.explain([png_file, str(png_file), png_bytes, bytearray(png_bytes)], model=MODEL)
    images = fake.requests[-1].images
    assert [im.encoded for im in images] == [png_bytes] * 4
    assert [im.id for im in images] == ["0", "1", "2", "3"]


def test_uint8_array_is_sent_as_exact_raw_pixels(client: camserve.Client, fake: FakeServer) -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    result = client.explain(array, model=MODEL)
    pixels = fake.requests[-1].images[0].pixels
    assert list(pixels.shape) == [3, 5, 7] and pixels.encoding == explain_pb2.UINT8
    assert (pixels.value_min, pixels.value_max) == (0.0, 255.0)
    np.testing.assert_array_equal(np.frombuffer(pixels.data, np.uint8).reshape(3, 5, 7), array.transpose(2, 0, 1))
    assert result.geometry is not None and result.geometry.original_size == (5, 7)


def test_float_array_is_sent_as_float32(client: camserve.Client, fake: FakeServer) -> None:
    array = np.linspace(0, 1, 4 * 6 * 3).reshape(4, 6, 3)  # float64 in [0, 1]
    client.explain(array, model=MODEL)
    pixels = fake.requests[-1].images[0].pixels
    assert pixels.encoding == explain_pb2.FLOAT32
    np.testing.assert_allclose(decode_tensor(pixels, "x"), array.transpose(2, 0, 1), rtol=1e-7)


def test_grey_array_is_replicated(client: camserve.Client, fake: FakeServer) -> None:
    client.explain(np.full((4, 4), 9, np.uint8), model=MODEL)
    assert list(fake.requests[-1].images[0].pixels.shape) == [3, 4, 4]


def test_pil_image_is_sent_as_lossless_png(client: camserve.Client, fake: FakeServer) -> None:
    rng = np.random.default_rng(1)
    array = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    client.explain(Image.fromarray(array), model=MODEL)
    encoded = fake.requests[-1].images[0].encoded
    with Image.open(io.BytesIO(encoded)) as im:
        assert im.format == "PNG"
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), array)


def test_pil_float_image_is_converted(client: camserve.Client, fake: FakeServer) -> None:
    client.explain(Image.new("F", (6, 5), 0.5), model=MODEL)
    with Image.open(io.BytesIO(fake.requests[-1].images[0].encoded)) as im:
        assert im.size == (6, 5)


def test_numpy_batch_is_a_list(client: camserve.Client, fake: FakeServer) -> None:
    results = client.explain(np.zeros((3, 8, 8, 3), np.uint8), model=MODEL)
    assert isinstance(results, list) and [r.index for r in results] == [0, 1, 2]
    assert len(fake.requests[-1].images) == 3


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((3, 8, 8), np.uint8), "channels-first"),
        (np.zeros((8, 8, 4), np.uint8), "RGBA"),
        (np.zeros((8, 8, 3), np.uint16), "dtype uint16"),
        (np.full((8, 8, 3), 2.0), "[0, 1]"),
        (np.full((8, 8, 3), np.nan), "NaN"),
        (np.zeros((0, 8, 3), np.uint8), "empty"),
        (b"", "empty"),
        (12345, "cannot send int"),
        ((x for x in [b"a"]), "use explain_many"),
        ("/definitely/not/here.png", "no such image file"),
    ],
    ids=[
        "chw",
        "rgba",
        "uint16",
        "float-range",
        "nan",
        "empty-array",
        "empty-bytes",
        "int",
        "generator",
        "missing-file",
    ],
)
def test_bad_images_raise_invalid_argument_before_sending(
    client: camserve.Client, fake: FakeServer, image: object, message: str
) -> None:
    with pytest.raises(camserve.InvalidArgument, match=message) as info:
        client.explain(image, model=MODEL)
    assert info.value.field == "images[0]"
    assert fake.calls == 0


def test_directory_is_not_an_image(client: camserve.Client, tmp_path: Path) -> None:
    with pytest.raises(camserve.InvalidArgument, match="directory"):
        client.explain(tmp_path, model=MODEL)


def test_bad_image_in_a_list_fails_only_itself(client: camserve.Client, fake: FakeServer, png_bytes: bytes) -> None:
    results = client.explain([png_bytes, "/no/such.png", b"BAD", png_bytes], model=MODEL)
    assert [r.ok for r in results] == [True, False, False, True]
    assert isinstance(results[1].error, camserve.InvalidArgument) and results[1].error.field == "images[1]"
    assert results[2].error is not None and results[2].error.field == "images[2].encoded"  # from the server
    assert len(fake.requests[-1].images) == 3  # the unreadable file was never sent
    assert [r.index for r in results] == [0, 1, 2, 3]
    with pytest.raises(camserve.InvalidArgument):
        results[1].raise_for_error()
    with pytest.raises(camserve.InvalidArgument):
        results[2].map("gradcam")
    assert results[0].raise_for_error() is results[0]


def test_failed_input_keeps_its_id(client: camserve.Client) -> None:
    results = client.explain([camserve.Input("/no/such.png", id="mine"), np.zeros((4, 4, 3), np.uint8)], model=MODEL)
    assert [r.id for r in results] == ["mine", "1"] and not results[0].ok


def test_strict_raises_first_failed_image(client: camserve.Client, png_bytes: bytes) -> None:
    with pytest.raises(camserve.InvalidArgument) as info:
        client.explain([png_bytes, b"BAD"], model=MODEL, strict=True)
    assert info.value.field == "images[1].encoded"


def test_empty_list_is_rejected(client: camserve.Client) -> None:
    with pytest.raises(camserve.InvalidArgument, match="no images"):
        client.explain([], model=MODEL)


# ---- request options ----


def sent(fake: FakeServer) -> explain_pb2.ExplainRequest:
    return fake.requests[-1]


def test_methods_layers_and_output_options_are_sent(client: camserve.Client, fake: FakeServer) -> None:
    client.explain(
        np.zeros((8, 8, 3), np.uint8),
        model=MODEL,
        methods=["gradcam", "saliency"],
        layers="layer1",
        encoding="uint8",
        resolution="input",
        top_predictions=3,
        request_id="req-7",
    )
    r = sent(fake)
    assert list(r.methods) == ["gradcam", "saliency"] and list(r.layers) == ["layer1"]
    assert r.output.encoding == explain_pb2.UINT8 and r.output.resolution == explain_pb2.INPUT
    assert r.output.top_predictions == 3 and r.request_id == "req-7"
    assert not r.HasField("target")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"target": 3}, explain_pb2.Target(class_ids=[3])),
        ({"target": np.int64(2)}, explain_pb2.Target(class_ids=[2])),
        ({"target": [1, 4]}, explain_pb2.Target(class_ids=[1, 4])),
        ({"target": "star"}, explain_pb2.Target(class_names=["star"])),
        ({"target": ["star", "cross"]}, explain_pb2.Target(class_names=["star", "cross"])),
        ({"top_k": 3}, explain_pb2.Target(top_k=3)),
    ],
)
def test_targets_are_sent(
    client: camserve.Client, fake: FakeServer, kwargs: dict[str, Any], expected: explain_pb2.Target
) -> None:
    result = client.explain(np.zeros((8, 8, 3), np.uint8), model=MODEL, **kwargs)
    assert sent(fake).target == expected
    wanted = list(expected.class_ids) or [LABELS.index(n) for n in expected.class_names] or list(range(expected.top_k))
    assert list(result.targets) == wanted


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"target": 1, "top_k": 2}, "target"),
        ({"top_k": 0}, "target.top_k"),
        ({"top_k": True}, "target.top_k"),
        ({"target": -1}, "target.class_ids"),
        ({"target": [1, "star"]}, "target"),
        ({"target": []}, "target"),
        ({"target": 1.5}, "target"),
        ({"methods": [""]}, "methods"),
        ({"layers": [3]}, "layers"),
        ({"encoding": "jpeg"}, "encoding"),
        ({"resolution": "huge"}, "resolution"),
        ({"top_predictions": 0}, "top_predictions"),
        ({"regions": [(1, 2, 3)]}, "regions[0]"),
        ({"regions": [(1, 2, 3.0, 4)]}, "regions[0]"),
        ({"regions": [(0, 0, 2**31, 5)]}, "regions[0]"),  # the wire's int32
        ({"regions": [np.zeros((4, 4), np.float32)]}, "regions[0]"),
        ({"regions": []}, "regions"),
        ({"regions": 5}, "regions"),
    ],
)
def test_bad_options_raise_before_sending(
    client: camserve.Client, fake: FakeServer, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(camserve.InvalidArgument) as info:
        client.explain(np.zeros((8, 8, 3), np.uint8), model=MODEL, **kwargs)
    assert info.value.field == field
    assert fake.calls == 0


@pytest.mark.parametrize(
    ("call", "keyword"),
    [("explain", "method"), ("explain", "concurrency"), ("explain_many", "method"), ("explain_many", "request_id")],
)
def test_unknown_keyword_is_a_type_error(client: camserve.Client, fake: FakeServer, call: str, keyword: str) -> None:
    # as for any Python function: explain takes no concurrency, explain_many no request_id
    with pytest.raises(TypeError, match=rf"{call}\(\) got an unexpected keyword argument '{keyword}'"):
        getattr(client, call)([np.zeros((8, 8, 3), np.uint8)], model=MODEL, **{keyword: 2})
    assert fake.calls == 0


@pytest.mark.parametrize("model", ["", None, 3])
def test_bad_model_name(client: camserve.Client, model: Any) -> None:
    with pytest.raises(camserve.InvalidArgument) as info:
        client.explain(b"x", model=model)
    assert info.value.field == "model"


def test_regions_boxes_and_masks_shared_and_per_image(client: camserve.Client, fake: FakeServer) -> None:
    mask = np.zeros((INPUT, INPUT), bool)
    mask[2:5, 3:9] = True
    results = client.explain(
        [np.zeros((8, 8, 3), np.uint8), camserve.Input(np.zeros((8, 8, 3), np.uint8), id="b", regions=[(0, 0, 4, 4)])],
        model="vae",
        methods=["area_saliency"],
        regions=[(1, 2, 10, 12), mask],
        reconstruction=True,
    )
    r = sent(fake)
    assert r.regions[0].box == explain_pb2.Box(x0=1, y0=2, x1=10, y1=12)
    m = r.regions[1].mask
    assert (m.height, m.width) == (INPUT, INPUT)
    np.testing.assert_array_equal(np.frombuffer(m.data, np.uint8).reshape(INPUT, INPUT), mask)
    assert len(r.images[0].regions) == 0 and r.images[1].regions[0].box.x1 == 4
    assert r.output.include_reconstruction
    assert results[0].targets == (0, 1) and results[1].targets == (0,) and results[1].id == "b"
    rec = results[0].reconstruction
    assert rec is not None and rec.shape == (INPUT, INPUT, 3)
    np.testing.assert_allclose(rec, 0.25)
    assert results[0].predictions == () and results[0].top is None


def test_region_values_are_the_servers_to_check(client: camserve.Client, fake: FakeServer) -> None:
    # The SDK checks a region's form; order, emptiness and bounds are checked by the server for every caller
    # (test_client_integration.py: the real server rejects these with InvalidArgument).
    empty = np.zeros((4, 4), bool)
    client.explain(
        [np.zeros((8, 8, 3), np.uint8), camserve.Input(np.zeros((8, 8, 3), np.uint8), regions=[empty])],
        model="vae",
        regions=[(5, 5, 2, 2), (-1, 0, 3, 3)],
    )
    r = sent(fake)
    assert [tuple((b.box.x0, b.box.y0, b.box.x1, b.box.y1)) for b in r.regions] == [(5, 5, 2, 2), (-1, 0, 3, 3)]
    assert r.images[1].regions[0].mask.data == bytes(16)


def test_per_image_targets(client: camserve.Client, fake: FakeServer) -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    results = client.explain([camserve.Input(img, target="cross"), camserve.Input(img, top_k=2), img], model=MODEL)
    r = sent(fake)
    assert list(r.images[0].target.class_names) == ["cross"] and r.images[1].target.top_k == 2
    assert not r.images[2].HasField("target")
    assert [x.targets for x in results] == [(4,), (0, 1), (0,)]


# ---- results ----


def test_result_structure(client: camserve.Client) -> None:
    result = client.explain(
        np.zeros((40, 60, 3), np.uint8), model=MODEL, methods=["gradcam", "saliency"], layers=["layer1", "layer2"]
    )
    assert isinstance(result, camserve.ExplainResult) and result.ok
    assert result.model_name == MODEL and result.model_version == "1.0"
    assert result.top == camserve.Prediction(class_id=0, label="circle", score=pytest.approx(0.9), logit=5.0)
    assert [p.class_id for p in result.predictions] == [0, 1, 2, 3, 4]
    assert set(result.maps) == {
        camserve.MapKey("gradcam", "layer1", 0),
        camserve.MapKey("gradcam", "layer2", 0),
        camserve.MapKey("saliency", "", 0),
    }
    assert result.methods == ("gradcam", "saliency") and result.layers == ("layer1", "layer2", "")
    cam = result.map("gradcam", layer="layer2")
    assert cam.shape == (CAM, CAM) and cam.array.dtype == np.float32 and not cam.is_gradient
    assert result.map("saliency").is_gradient
    with pytest.raises(ValueError):
        cam.array[0, 0] = 5  # read-only
    with pytest.raises(camserve.NotFound, match="give layer="):
        result.map("gradcam")
    with pytest.raises(camserve.NotFound, match="no map"):
        result.map("deconvnet")
    g = result.geometry
    assert g == camserve.Geometry((40, 60), camserve.Box(10, 0, 50, 40), (INPUT, INPUT))
    assert result.timing.explain_ms == 20.0 and result.timing.round_trip_ms > 0
    summary = result.summary()
    assert summary["predictions"][0]["label"] == "circle" and len(summary["maps"]) == 3  # type: ignore[index]
    assert "circle" in repr(result)


@pytest.mark.parametrize("encoding", ["float16", "float32", "uint8", "png"])
def test_map_encodings_decode_to_the_same_values(client: camserve.Client, encoding: str) -> None:
    result = client.explain(
        np.zeros((8, 8, 3), np.uint8), model=MODEL, methods=["gradcam", "saliency"], encoding=encoding
    )
    cam = result.map("gradcam").array
    expected = np.full((CAM, CAM), 1.0, np.float32)
    expected[0, 0] = 0
    np.testing.assert_allclose(cam, expected, atol=1 / 255 + 1e-6)
    grad = result.map("saliency").array
    assert grad.shape == (3, INPUT, INPUT)
    np.testing.assert_allclose(grad[2], -1.0, atol=2 / 255 + 1e-6)
    np.testing.assert_allclose(grad[0], 1.0, atol=2 / 255 + 1e-6)


def test_resolution_input(client: camserve.Client) -> None:
    result = client.explain(np.zeros((8, 8, 3), np.uint8), model=MODEL, resolution="input")
    assert result.map("gradcam").shape == (INPUT, INPUT)


# ---- describe / models / ping ----


def test_describe(client: camserve.Client, fake: FakeServer) -> None:
    info = client.describe(MODEL)
    assert sent(fake).describe and len(sent(fake).images) == 0
    assert info.name == MODEL and info.kind == "classifier" and info.labels == LABELS
    assert info.methods == ("gradcam", "saliency", "guided_backprop") and info.default_layers == ("layer2",)
    assert info.input_size == (INPUT, INPUT) and (info.max_images, info.max_top_k, info.max_regions) == (16, 5, 8)
    assert (info.max_image_bytes, info.max_pixels, info.max_response_bytes) == (8 << 20, 40_000_000, 6_000_000)
    assert info.versions["camserve"] == "fake"
    with pytest.raises(camserve.NotFound):
        client.describe("nope")


def test_describe_without_model_info_is_internal(client: camserve.Client, fake: FakeServer) -> None:
    fake.answer = lambda r, m, c: explain_pb2.ExplainResponse(model_name=m)
    with pytest.raises(camserve.Internal, match="model_info"):
        client.describe(MODEL)


def test_models_reads_every_page(client: camserve.Client, fake: FakeServer) -> None:
    fake.models = [f"m{i:04d}" for i in range(2345)]
    names = [m.name for m in client.models()]
    assert names == fake.models
    assert client.models()[0] == camserve.ModelEntry("m0000", "m0000.mar")


def test_ping_reports_status_text(client: camserve.Client, fake: FakeServer) -> None:
    assert client.ping() == "Healthy"
    fake.health = '{"status": "Partial Healthy"}'
    assert client.ping() == "Partial Healthy"
    fake.health = "not json"
    assert client.ping() == "not json"
