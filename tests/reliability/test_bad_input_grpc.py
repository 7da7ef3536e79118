"""Bad input over gRPC, one table: each case gets the right code, a message naming the problem, and the worker lives.

Every case is sent to the session server (``camserve_server``), through the SDK where it can express the case and
through TorchServe's generated stubs where the SDK would refuse it client-side. After each case a good request must
be answered by the same worker process (:func:`still_serving` in conftest.py). The expected code is a set where
Some cases are answered before camserve's handler runs: by the gateway (an envelope without a model name or a
'request' entry: INVALID_ARGUMENT; an unknown model: NOT_FOUND, where TorchServe alone says INTERNAL) or by
TorchServe's frontend (a bad key: PERMISSION_DENIED).

The awkward images that must *succeed* (alpha, grey, palette, 1-bit, 16-bit, CMYK, EXIF rotation, animation,
1x1, extreme aspect ratios) are at the end, checked against a reference decoded here with plain Pillow and against
the geometry they must report.

Covered elsewhere and not repeated here: wrong-kind and empty keys, a 16-MiB+ request and the header-only pixel
bomb (tests/integration/test_server_grpc.py); the decoder's rules one by one with no server
(tests/handlers/test_serving_images.py, test_serving_codec.py); how the SDK maps every code
(tests/client/test_client_errors.py). The 1 ms deadline and deadline floods belong with the gateway's tests.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import camserve
import grpc
import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2
from conftest import CLASSIFIER, VAE
from PIL import Image, ImageOps
from reliability_helpers import (
    RawCaller,
    animated_gif,
    box,
    encode,
    exif_rotated_jpeg,
    gradient,
    png,
    raw_pixels,
    shapes,
    zero_bomb,
)

pytestmark = pytest.mark.integration

GOOD = png(shapes(1, start=700)[0])
BASE = Image.fromarray(shapes(1, start=701)[0])
JPEG = encode(BASE, "JPEG", quality=90)


@dataclass(frozen=True)
class Env:
    """What a case may use to send itself."""

    sdk: camserve.Client
    raw: RawCaller
    address: str


@dataclass(frozen=True)
class Outcome:
    """A failure as the caller sees it: a gRPC status, an SDK error or an in-band ``Error``."""

    code: str
    message: str
    field: str = ""


@dataclass(frozen=True)
class Case:
    """One bad input: how to send it, and the code, message (regex) and field (prefix) it must get."""

    name: str
    model: str
    send: Callable[[Env], Outcome | None]
    codes: frozenset[str]
    message: str
    field: str = ""


def case(
    name: str, model: str, send: Callable[[Env], Outcome | None], codes: str, message: str, field: str = ""
) -> Any:
    return pytest.param(Case(name, model, send, frozenset(codes.split("|")), message, field), id=name)


# ------------------------------------------------------------------------------------------------ senders
def via_sdk(image: Any, model: str = CLASSIFIER, **options: Any) -> Callable[[Env], Outcome | None]:
    """``Client.explain``; the error it raises (the request's, or a single image's) as the outcome."""

    def send(env: Env) -> Outcome | None:
        try:
            env.sdk.explain(image, model=model, **options)
        except camserve.CamserveError as err:  # the SDK's class is what its caller sees (the wire code may differ)
            return Outcome(type(err).default_code, err.message, err.field)
        return None

    return send


def via_sdk_client(**client_args: Any) -> Callable[[Env], Outcome | None]:
    """A good image through a client built with ``client_args`` (e.g. a wrong token)."""

    def send(env: Env) -> Outcome | None:
        with camserve.Client(env.address, retries=0, timeout=60, **client_args) as other:
            return via_sdk(GOOD)(Env(other, env.raw, env.address))

    return send


def via_stub(
    model: str, inputs: dict[str, bytes], metadata: tuple[tuple[str, str], ...] | None = None
) -> Callable[[Env], Outcome | None]:
    """A raw ``Predictions`` call; a gRPC status, an in-band ExplainResponse error or a REST-style JSON error."""

    def send(env: Env) -> Outcome | None:
        try:
            reply = env.raw.predict(model, inputs, metadata=metadata)
        except grpc.RpcError as err:
            return Outcome(err.code().name, err.details() or "")
        return in_band(reply)

    return send


def via_message(model: str, msg: explain_pb2.ExplainRequest) -> Callable[[Env], Outcome | None]:
    """An ``ExplainRequest`` the SDK would not build, through the stubs."""
    return via_stub(model, {"request": msg.SerializeToString()})


def in_band(reply: inference_pb2.PredictionResponse) -> Outcome | None:
    """The error carried by an answer: request-level first, else the first image's."""
    if reply.prediction.lstrip().startswith(b"{"):  # the handler's JSON answer (an input that is not an ExplainRequest)
        error = json.loads(reply.prediction)["error"]
        return Outcome(error["code"], error["message"], error.get("field", ""))
    response = explain_pb2.ExplainResponse.FromString(reply.prediction)
    if response.HasField("error"):
        return Outcome(response.error.code, response.error.message, response.error.field)
    for result in response.results:
        if result.HasField("error"):
            return Outcome(result.error.code, result.error.message, result.error.field)
    return None


def message(images: list[bytes | explain_pb2.Image], **fields: Any) -> explain_pb2.ExplainRequest:
    msg = explain_pb2.ExplainRequest(**fields)
    for image in images:
        msg.images.append(image if isinstance(image, explain_pb2.Image) else explain_pb2.Image(encoded=image))
    return msg


def pixels_with(value: float) -> explain_pb2.Image:
    values = np.full((3, 64, 64), 0.5, np.float32)
    values[1, 10, 20] = value
    return raw_pixels(values)


NOT_AN_IMAGE = r"not a readable image; accepted formats: PNG, JPEG, WEBP, BMP, GIF, TIFF"
# The engine's region rule (handlers/engine/_vae/_regions.py), the one owner of its words; fields name the coordinate.
BOX_RULE = (
    r"box (is inverted: \w+=\d+ < \w+=\d+|is empty: \w+=\d+ == \w+=\d+"
    r"|[xy][01]=-?\d+ is out of bounds: must be in \[0, 64\])"
)
TOKEN = r"Token Authorization failed"
PIXELS = r"too many pixels \(the limit is 40000000\)"
OVER = r"over the server's limit of 15000000"
BAD, FULL, MISSING, AUTH = "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "NOT_FOUND", "PERMISSION_DENIED|UNAUTHENTICATED"
IMG0, C, V = "images[0].encoded", CLASSIFIER, VAE
EMPTY = {"request": b""}
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>'
HEAVY = ["saliency", "guided_backprop", "deconvnet", "guided_gradcam"]

# fmt: off
CASES = [
    # --- routing and authorization (answered by TorchServe's frontend before the handler)
    case("empty-model", C, via_stub("", EMPTY), BAD, r"model_name is required"),
    case("unknown-model", C, via_sdk(GOOD, model="no-such-model"), MISSING, r"Model not found: no-such-model"),
    case("missing-token", C, via_stub(C, EMPTY, metadata=()), AUTH, TOKEN),
    case("wrong-token", C, via_sdk_client(token="0123456789abcdef"), AUTH, TOKEN),
    case("token-without-bearer", C, via_stub(C, EMPTY, (("authorization", "Bearer"),)), AUTH, TOKEN),
    case("token-basic-scheme", C, via_stub(C, EMPTY, (("authorization", "Basic dXNlcjpwYXNz"),)), AUTH, TOKEN),
    case("token-junk", C, via_stub(C, EMPTY, (("authorization", "Bearer %%%;'\" <junk>"),)), AUTH, TOKEN),
    # --- the envelope (an input map without "request" is refused by the gateway, naming the keys it got)
    case("empty-input-map", C, via_stub(C, {}), BAD, r"input has no 'request' entry \(keys: none\)"),
    case("wrong-input-key", C, via_stub(C, {"explain": message([GOOD]).SerializeToString()}), BAD,
         r"input has no 'request' entry \(keys: 'explain'\)"),
    case("not-an-explain-request", C, via_stub(C, {"request": b'{"images": ["cat.jpg"]}'}), BAD,
         r"not a valid camserve.v1.ExplainRequest", "request"),
    case("predictions-request-inside", C,
         via_stub(C, {"request": inference_pb2.PredictionsRequest(model_name=C).SerializeToString()}), BAD,
         r"not a valid camserve.v1.ExplainRequest", "request"),
    case("no-images", C, via_message(C, message([], methods=["gradcam"])), BAD, r"image", "images"),
    # --- images
    case("zero-byte-image", C, via_message(C, message([b""])), BAD, r"the image is empty", IMG0),
    case("random-bytes", C, via_sdk(np.random.default_rng(16).bytes(4096)), BAD, NOT_AN_IMAGE, IMG0),
    case("truncated-jpeg", C, via_sdk(JPEG[: len(JPEG) // 2]), BAD, r"truncated or corrupt", IMG0),
    case("png-signature-only", C, via_sdk(b"\x89PNG\r\n\x1a\n"), BAD, r"truncated|not a readable image", IMG0),
    case("bomb-48kB-20000x20000", C, via_sdk(zero_bomb(20_000, 20_000)), FULL, PIXELS, IMG0),
    case("bomb-12kB-10000x10000", C, via_sdk(zero_bomb(10_000, 10_000)), FULL, PIXELS, IMG0),
    case("format-ppm", C, via_sdk(encode(BASE, "PPM")), BAD, NOT_AN_IMAGE, IMG0),
    case("format-ico", C, via_sdk(encode(BASE, "ICO")), BAD, NOT_AN_IMAGE, IMG0),
    case("format-tga", C, via_sdk(encode(BASE, "TGA")), BAD, NOT_AN_IMAGE, IMG0),
    case("format-jpeg2000", C, via_sdk(encode(BASE, "JPEG2000")), BAD, NOT_AN_IMAGE, IMG0),
    case("format-svg", C, via_sdk(SVG), BAD, NOT_AN_IMAGE, IMG0),
    case("nan-pixel", C, via_message(C, message([pixels_with(float("nan"))])), BAD, r"NaN or inf", "images[0].pixels"),
    case("inf-pixel", C, via_message(C, message([pixels_with(float("inf"))])), BAD, r"NaN or inf", "images[0].pixels"),
    # --- options
    case("unknown-method", C, via_sdk(GOOD, methods=["telepathy"]), BAD,
         r"method 'telepathy' is not available.*available: ", "methods[0]"),
    case("vae-method-on-classifier", C, via_sdk(GOOD, methods=["area_saliency"]), BAD,
         r"method 'area_saliency' is not available", "methods[0]"),
    case("unknown-layer", C, via_sdk(GOOD, layers=["layer9.conv"]), MISSING,
         r"layer 'layer9.conv' is not an explainable layer", "layers[0]"),
    case("class-id-minus-one", C, via_message(C, message([GOOD], target=explain_pb2.Target(class_ids=[-1]))), BAD,
         r"class id -1 is outside \[0, 6\)", "target.class_ids[0]"),
    case("class-id-too-large", C, via_sdk(GOOD, target=6), BAD, r"class id 6 is outside \[0, 6\)",
         "target.class_ids[0]"),
    case("unknown-class-name", C, via_sdk(GOOD, target="dodecahedron"), MISSING, r"no class is labelled 'dodecahedron'",
         "target.class_names[0]"),
    case("top-k-over-classes", C, via_sdk(GOOD, top_k=7), BAD, r"top_k is 7; it must be at most 6", "target.top_k"),
    case("top-k-over-limit", C, via_sdk(GOOD, top_k=1000), f"{BAD}|{FULL}", r"top_k is 1000", "target.top_k"),
    case("response-over-limit", C,
         via_sdk([GOOD] * 16, methods=HEAVY, top_k=6, encoding="float32", resolution="input"), FULL, OVER, "output"),
    # --- VAE regions
    case("region-out-of-bounds", V, via_sdk(GOOD, model=V, regions=[(0, 0, 65, 64)]), BAD, BOX_RULE, "regions[0].box"),
    case("region-far-out", V, via_sdk(GOOD, model=V, regions=[(1000, 1000, 2000, 2000)]), BAD, BOX_RULE,
         "regions[0].box"),
    case("region-empty", V, via_message(V, message([GOOD], regions=[box(10, 10, 10, 20)])), BAD, BOX_RULE,
         "regions[0].box"),
    case("region-inverted", V, via_message(V, message([GOOD], regions=[box(40, 40, 8, 8)])), BAD, BOX_RULE,
         "regions[0].box"),
    case("region-neither-box-nor-mask", V, via_message(V, message([GOOD], regions=[explain_pb2.Region()])), BAD,
         r"a region needs a box or a mask", "regions[0]"),
    case("too-many-regions", V, via_sdk(GOOD, model=V, regions=[(0, 0, 8, 8)] * 17), FULL, r"regions", "regions"),
    case("vae-response-over-limit", V, via_sdk([GOOD] * 16, model=V, regions=[(0, 0, 8, 8)] * 16,
         methods=["area_saliency", "area_guided"], encoding="float32"), FULL, OVER, "output"),
]
# fmt: on


@pytest.fixture(scope="module")
def env(sdk: camserve.Client, raw: RawCaller, camserve_server: Any) -> Env:
    return Env(sdk, raw, camserve_server.address)


@pytest.mark.parametrize("bad", CASES)
def test_bad_input_gets_its_code_and_message_and_the_worker_lives(
    bad: Case, env: Env, pids: Callable[[str], list[int]], still_serving: Callable[[str, list[int]], None]
) -> None:
    before = pids(bad.model)
    outcome = bad.send(env)
    assert outcome is not None, f"{bad.name} was accepted"
    assert outcome.code in bad.codes, outcome
    assert re.search(bad.message, outcome.message, re.DOTALL), outcome
    assert outcome.field.startswith(bad.field), outcome
    still_serving(bad.model, before)


def test_the_table_has_at_least_thirty_distinct_cases() -> None:
    names = [p.values[0].name for p in CASES]
    assert len(set(names)) == len(names) >= 30


def test_one_bad_image_in_a_batch_of_eight_fails_alone(
    sdk: camserve.Client, pids: Callable[[str], list[int]], still_serving: Callable[[str, list[int]], None]
) -> None:
    before = pids(CLASSIFIER)
    images: list[Any] = [png(im) for im in shapes(8, start=720)]
    images[5] = JPEG[:300]
    results = sdk.explain(images, model=CLASSIFIER, methods=["gradcam"])
    assert [r.ok for r in results] == [i != 5 for i in range(8)]
    bad = results[5].error
    assert isinstance(bad, camserve.InvalidArgument) and bad.field == "images[5].encoded", bad
    alone = sdk.explain(images[:5] + images[6:], model=CLASSIFIER, methods=["gradcam"])
    for got, want in zip([r for r in results if r.ok], alone, strict=True):  # the others as if sent without it
        assert got.top.class_id == want.top.class_id  # type: ignore[union-attr]
        np.testing.assert_allclose(got.map("gradcam").array, want.map("gradcam").array, rtol=2e-3, atol=2e-3)
    still_serving(CLASSIFIER, before)


# -------------------------------------------------------------------------------------- awkward but valid
def rgb(img: Image.Image) -> np.ndarray:
    """What the decoder's documented rules make of ``img``: alpha over white, everything else as Pillow's RGB."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def with_transparent_stripe(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    alpha = np.full((img.height, img.width), 255, np.uint8)
    alpha[:, 20:30] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


GREY16 = Image.fromarray(np.asarray(BASE.convert("L")).astype(np.uint16) * 257)
FRAMES = shapes(2, start=3)
TALL_EXIF = exif_rotated_jpeg(96, 64)  # stored 96 wide x 64 high, shown rotated: 64 wide x 96 high

# name, bytes, the reference RGB array the server must have seen, (original w, h), crop (x0, y0, x1, y1)
VALID = [
    (
        "rgba-transparent-stripe",
        encode(with_transparent_stripe(BASE)),
        rgb(with_transparent_stripe(BASE)),
        (64, 64),
        (0, 0, 64, 64),
    ),
    ("grey-L", encode(BASE.convert("L")), rgb(BASE.convert("L")), (64, 64), (0, 0, 64, 64)),
    ("palette-P", encode(BASE.convert("P")), rgb(BASE.convert("P")), (64, 64), (0, 0, 64, 64)),
    ("one-bit", encode(BASE.convert("1")), rgb(BASE.convert("1")), (64, 64), (0, 0, 64, 64)),
    ("sixteen-bit-grey", encode(GREY16), rgb(BASE.convert("L")), (64, 64), (0, 0, 64, 64)),
    ("cmyk-jpeg", encode(BASE.convert("CMYK"), "JPEG", quality=95), None, (64, 64), (0, 0, 64, 64)),
    ("exif-rotated-jpeg", TALL_EXIF, None, (64, 96), (0, 16, 64, 80)),
    ("animated-gif-frame-0", animated_gif(list(FRAMES)), None, (64, 64), (0, 0, 64, 64)),
    ("one-by-one", png(gradient(1, 1)), None, (1, 1), (0, 0, 1, 1)),
    ("aspect-4096x1", png(gradient(4096, 1)), None, (4096, 1), (2047, 0, 2048, 1)),
    ("aspect-1x4096", png(gradient(1, 4096)), None, (1, 4096), (0, 2047, 1, 2048)),
]


def pillow_reference(data: bytes) -> np.ndarray:
    """Frame 0, EXIF orientation applied, as RGB: decoded here with plain Pillow, not the server's code."""
    with Image.open(io.BytesIO(data)) as img:
        img.seek(0)
        return rgb(ImageOps.exif_transpose(img) or img)


@pytest.mark.parametrize(("name", "data", "reference", "size", "crop"), VALID, ids=[v[0] for v in VALID])
def test_awkward_images_are_served_in_their_displayed_geometry(
    name: str,
    data: bytes,
    reference: np.ndarray | None,
    size: tuple[int, int],
    crop: tuple[int, int, int, int],
    sdk: camserve.Client,
    pids: Callable[[str], list[int]],
    still_serving: Callable[[str, list[int]], None],
) -> None:
    before = pids(CLASSIFIER)
    got = sdk.explain(data, model=CLASSIFIER, methods=["gradcam", "saliency"], resolution="input")
    geometry = got.geometry
    assert geometry is not None
    assert geometry.original_size == (size[1], size[0])  # (height, width) as displayed
    c = geometry.crop
    assert (c.x0, c.y0, c.x1, c.y1) == crop
    assert geometry.input_size == (64, 64) and got.map("saliency").shape == (3, 64, 64)
    assert got.map("gradcam").shape == (64, 64)
    # On the original's pixel grid the map has the displayed (rotated) shape.
    assert geometry.to_original(got.map("gradcam")).shape == (size[1], size[0])
    expected = reference if reference is not None else pillow_reference(data)
    assert expected.shape[:2] == (size[1], size[0])
    # The same pixels sent as a plain RGB PNG get the same answer: the server saw what the rules say.
    want = sdk.explain(png(expected), model=CLASSIFIER, methods=["gradcam", "saliency"], resolution="input")
    assert [p.class_id for p in got.predictions] == [p.class_id for p in want.predictions]
    np.testing.assert_allclose([p.logit for p in got.predictions], [p.logit for p in want.predictions], atol=1e-4)
    scale = float(np.abs(want.map("gradcam").array).max()) or 1.0
    np.testing.assert_allclose(got.map("gradcam").array, want.map("gradcam").array, atol=2e-3 * scale)
    if name == "animated-gif-frame-0":  # and not frame 1
        other = sdk.explain(png(pillow_reference(encode(Image.fromarray(FRAMES[1]), "GIF"))), model=CLASSIFIER)
        assert [p.logit for p in other.predictions] != pytest.approx([p.logit for p in got.predictions], abs=1e-3)
    still_serving(CLASSIFIER, before)
