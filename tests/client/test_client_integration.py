"""Every public call of the SDK and the CLI against the real TorchServe of the session (tests/conftest.py).

Sync and async clients, each error type the server can produce, per-image errors among good images, deadlines,
tokens from the key file, and the gallery opened in headless Chromium.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import camserve
import numpy as np
import pytest
from camserve import cli, gallery
from PIL import Image, ImageDraw

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "model_store" / "samples"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHAPES = "shapes-classifier"
VAE = "shapes-vae"
IMAGENET = "imagenet-efficientnet-lite0"


def shape_image(kind: int, size: int = 64) -> np.ndarray:
    """A small picture in the spirit of the shapes data set: one coloured shape on a noisy background."""
    rng = np.random.default_rng(kind)
    base = (rng.random((size, size, 3)) * 80 + 60).astype(np.uint8)
    image = Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    colour = (220, 40, 40) if kind % 2 else (40, 60, 220)
    if kind % 3 == 0:
        draw.ellipse(box, fill=colour)
    elif kind % 3 == 1:
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(size // 2, size // 5), (size // 5, 4 * size // 5), (4 * size // 5, 4 * size // 5)], fill=colour)
    return np.asarray(image)


class Served:
    """What the session server offers, and inputs that suit its classifier."""

    def __init__(self, server: Any) -> None:
        self.server = server
        # the small demo classifier is the fast choice; the ImageNet model stands in while it is not served
        self.classifier = SHAPES if SHAPES in server.models else IMAGENET
        if self.classifier not in server.models:
            pytest.skip(f"no classifier is served: {dict(server.not_served)}")

    def images(self, n: int) -> list[Any]:
        if self.classifier == SHAPES:
            return [shape_image(i) for i in range(n)]
        photos = sorted(SAMPLES.glob("*.jpg"))
        return [photos[i % len(photos)] for i in range(n)]

    def client(self, **kwargs: Any) -> camserve.Client:
        args = {"token_file": self.server.key_file, "timeout": 300.0, **kwargs}
        return camserve.Client(self.server.address, **args)

    def async_client(self, **kwargs: Any) -> camserve.AsyncClient:
        args = {"token_file": self.server.key_file, "timeout": 300.0, **kwargs}
        return camserve.AsyncClient(self.server.address, **args)


@pytest.fixture(scope="module")
def served(camserve_server: Any) -> Served:
    return Served(camserve_server)


# ---- sync client: every public call ----


def test_ping_models_describe(served: Served) -> None:
    with served.client() as client:
        assert client.ping() == "Healthy"
        assert {m.name for m in client.models()} == set(served.server.models)
        for name in served.server.models:
            info = client.describe(name)
            assert info.name == name and info.kind in ("classifier", "vae")
            assert info.methods and set(info.default_methods) <= set(info.methods)
            assert set(info.default_layers) <= set(info.layers)
            assert info.input_size[0] > 0 and info.max_images > 0
            if info.kind == "classifier":
                assert info.labels and info.max_top_k > 0


def test_explain_one_image_with_methods_layers_and_top_k(served: Served) -> None:
    with served.client() as client:
        info = client.describe(served.classifier)
        layers = [info.default_layers[0], info.layers[len(info.layers) // 2]]
        result = client.explain(
            served.images(1)[0],
            model=served.classifier,
            methods=["gradcam", "guided_backprop"],
            layers=layers,
            top_k=2,
        )
    assert isinstance(result, camserve.ExplainResult) and result.ok
    assert len(result.predictions) >= 2 and result.predictions[0].score >= result.predictions[1].score
    assert result.predictions[0].label in info.labels
    assert result.targets == tuple(p.class_id for p in result.predictions[:2])
    for target in result.targets:
        for layer in layers:
            cam = result.map("gradcam", layer=layer, target=target)
            assert cam.array.ndim == 2 and np.isfinite(cam.array).all() and cam.array.min() >= 0
        grad = result.map("guided_backprop", target=target)
        assert grad.shape == (3, *info.input_size)
    g = result.geometry
    assert g is not None and g.input_size == info.input_size
    up = result.map("gradcam", layer=layers[0], target=result.targets[0]).upsample(info.input_size).normalized()
    assert up.shape == info.input_size and float(up.array.max()) == pytest.approx(1.0)
    assert result.to_original(up).shape == g.original_size
    assert result.timing.explain_ms > 0 and result.timing.round_trip_ms >= result.timing.explain_ms


@pytest.mark.parametrize("encoding", ["float32", "uint8", "png"])
def test_encodings_and_input_resolution(served: Served, encoding: str) -> None:
    image = served.images(1)[0]
    with served.client() as client:
        reference = client.explain(image, model=served.classifier, methods=["gradcam"], encoding="float32")
        other = client.explain(
            image, model=served.classifier, methods=["gradcam"], encoding=encoding, resolution="input"
        )
    ref = reference.map("gradcam")
    got = other.map("gradcam")
    assert got.size == reference.geometry.input_size  # type: ignore[union-attr]
    # the server's upsampling (torch) and the client's (PIL) are the same bilinear rule; quantisation adds 1/255
    scale = max(float(ref.array.max()), 1e-6)
    np.testing.assert_allclose(got.array, ref.upsample(got.size).array, atol=0.02 * scale)


def test_image_input_types_agree(served: Served, tmp_path: Path) -> None:
    """Path, bytes and PIL (all sent encoded) give identical maps; numpy (raw pixels) agrees closely.

    Raw pixels are resized by the server on another code path than decoded files, so their maps differ by a few
    percent of the map's maximum (2.9 % measured for the cat photograph); the prediction is the same.
    """
    source = served.images(1)[0]
    array = np.asarray(Image.open(source).convert("RGB")) if isinstance(source, Path) else source
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    with served.client() as client:
        results = client.explain(
            [path, path.read_bytes(), Image.fromarray(array), array, array.astype(np.float32) / 255.0],
            model=served.classifier,
            methods=["gradcam"],
        )
    assert len({r.top.class_id for r in results}) == 1  # type: ignore[union-attr]
    cams = [r.map("gradcam").array for r in results]
    scale = max(float(cams[0].max()), 1e-6)
    for cam in cams[1:3]:
        np.testing.assert_array_equal(cam, cams[0])  # the same PNG bytes: the same computation
    np.testing.assert_allclose(cams[3], cams[4], atol=2e-3 * scale)  # uint8 and float raw pixels agree
    np.testing.assert_allclose(cams[3], cams[0], atol=0.05 * scale)


def test_list_with_a_bad_image_and_strict(served: Served) -> None:
    good = served.images(2)
    with served.client() as client:
        results = client.explain([good[0], b"this is not an image", good[1]], model=served.classifier)
        assert [r.ok for r in results] == [True, False, True]
        assert isinstance(results[1].error, camserve.InvalidArgument)
        assert results[1].error.field.startswith("images[1]")
        with pytest.raises(camserve.InvalidArgument):
            client.explain(b"this is not an image", model=served.classifier)
        with pytest.raises(camserve.InvalidArgument):
            client.explain([good[0], b"junk"], model=served.classifier, strict=True)


def test_explain_many_ordered(served: Served) -> None:
    images = served.images(6)
    with served.client() as client:
        single = [client.explain(im, model=served.classifier, methods=["gradcam"]) for im in images[:3]]
        streamed = list(client.explain_many(images, model=served.classifier, methods=["gradcam"], concurrency=3))
    assert [r.index for r in streamed] == list(range(6))
    for a, b in zip(single, streamed[:3], strict=True):
        assert a.top.class_id == b.top.class_id  # type: ignore[union-attr]
        np.testing.assert_allclose(a.map("gradcam").array, b.map("gradcam").array, rtol=1e-2, atol=1e-3)


def test_vae_regions_and_reconstruction(served: Served) -> None:
    served.server.require(VAE)
    boxes = [(8, 8, 24, 24), (32, 32, 56, 56)]
    mask = np.zeros((64, 64), bool)
    mask[40:60, 4:20] = True
    with served.client() as client:
        info = client.describe(VAE)
        result = client.explain(shape_image(1), model=VAE, regions=[*boxes, mask], reconstruction=True)
    assert result.ok and result.predictions == ()
    assert result.targets == (0, 1, 2)
    assert set(result.methods) == set(info.default_methods)
    assert result.reconstruction is not None and result.reconstruction.shape == (*info.input_size, 3)
    assert float(result.reconstruction.min()) >= 0.0 and float(result.reconstruction.max()) <= 1.0


@pytest.mark.parametrize(
    "region",
    [(24, 8, 8, 24), (8, 8, 8, 24), (-1, 0, 8, 8), (0, 0, 65, 8), np.zeros((64, 64), bool), np.ones((8, 8), bool)],
    ids=["inverted", "empty", "negative", "outside", "empty-mask", "mask-size"],
)
def test_region_values_are_checked_by_the_server(served: Served, region: Any) -> None:
    # the SDK sends any well-formed region; the server owns order, emptiness and bounds (one rule, one message)
    served.server.require(VAE)
    with served.client() as client:
        with pytest.raises(camserve.InvalidArgument) as info:
            client.explain(shape_image(1), model=VAE, regions=[region])
        assert info.value.field.startswith("regions[0]") and info.value.message
        good, bad = client.explain([shape_image(1), camserve.Input(shape_image(2), regions=[region])], model=VAE)
    assert good.ok and isinstance(bad.error, camserve.InvalidArgument)
    assert bad.error.field.startswith("images[1].regions[0]")


# ---- errors the real server produces ----


def test_unknown_model_is_not_found(served: Served) -> None:
    with served.client() as client, pytest.raises(camserve.NotFound, match="no-such-model"):
        client.explain(served.images(1)[0], model="no-such-model")
    with served.client() as client, pytest.raises(camserve.NotFound):
        client.describe("no-such-model")


@pytest.mark.parametrize(
    ("kwargs", "field", "cls"),
    [
        ({"methods": ["no_such_method"]}, "methods[0]", camserve.InvalidArgument),
        ({"layers": ["no.such.layer"]}, "layers[0]", camserve.NotFound),  # the server: a layer that does not exist
    ],
)
def test_bad_method_or_layer_is_rejected(
    served: Served, kwargs: dict[str, Any], field: str, cls: type[camserve.CamserveError]
) -> None:
    with served.client() as client, pytest.raises(cls) as info:
        client.explain(served.images(1)[0], model=served.classifier, **kwargs)
    assert info.value.field == field and info.value.message


def test_over_the_limits_is_resource_exhausted_or_invalid(served: Served) -> None:
    with served.client() as client:
        info = client.describe(served.classifier)
        with pytest.raises((camserve.ResourceExhausted, camserve.InvalidArgument)) as exc:
            client.explain(served.images(1)[0], model=served.classifier, top_k=info.max_top_k + 1)
        assert "top_k" in exc.value.field or "top_k" in exc.value.message
        with pytest.raises(camserve.ResourceExhausted):
            client.explain([np.zeros((8, 8, 3), np.uint8)] * (info.max_images + 1), model=served.classifier)


def test_request_over_the_size_limit_is_resource_exhausted(served: Served) -> None:
    big = np.zeros((1500, 1500, 3), np.float32)  # 27 MB of raw pixels, over deploy/config.properties' 16 MiB
    with served.client(retries=0) as client, pytest.raises(camserve.ResourceExhausted, match="max_request_size"):
        client.explain(big, model=served.classifier)


def test_bad_tokens_are_unauthenticated(served: Served, tmp_path: Path) -> None:
    with camserve.Client(served.server.address, token="wrong") as client, pytest.raises(camserve.Unauthenticated) as e:
        client.ping()
    assert e.value.code == "PERMISSION_DENIED"
    with camserve.Client(served.server.address) as client, pytest.raises(camserve.Unauthenticated):
        client.explain(served.images(1)[0], model=served.classifier)
    inference_only = camserve.Client(served.server.address, token=served.server.inference_token)
    with inference_only as client, pytest.raises(camserve.Unauthenticated):
        client.models()  # the management API wants the management key


def test_env_token_file_and_address(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMSERVE_ADDRESS", served.server.address)
    monkeypatch.setenv("CAMSERVE_TOKEN_FILE", str(served.server.key_file))
    with camserve.Client() as client:
        assert client.ping() == "Healthy"
        assert client.models()


def test_deadline_exceeded(served: Served) -> None:
    with served.client(retries=3) as client, pytest.raises(camserve.DeadlineExceeded):
        client.explain(served.images(1)[0], model=served.classifier, methods=["guided_backprop"], timeout=0.001)


def test_unreachable_is_unavailable(served: Served) -> None:
    host, _, port = served.server.address.rpartition(":")
    with (
        camserve.Client(f"{host}:{int(port) + 7}", retries=1, backoff=0.05) as client,
        pytest.raises(camserve.Unavailable),
    ):
        client.ping()


# ---- async client: every public call ----


@pytest.mark.asyncio
async def test_async_client_every_call(served: Served) -> None:
    images = served.images(3)
    async with served.async_client() as client:
        assert await client.ping() == "Healthy"
        assert {m.name for m in await client.models()} == set(served.server.models)
        info = await client.describe(served.classifier)
        one = await client.explain(images[0], model=served.classifier, methods=["gradcam"], top_k=2)
        assert one.ok and len(one.targets) == 2 and one.top.label in info.labels  # type: ignore[union-attr]
        many = await client.explain([images[0], b"junk"], model=served.classifier, methods=["gradcam"])
        assert [r.ok for r in many] == [True, False]
        streamed = [r async for r in client.explain_many(images, model=served.classifier, methods=["gradcam"])]
        assert [r.index for r in streamed] == [0, 1, 2]
        np.testing.assert_allclose(
            streamed[0].map("gradcam").array, one.map("gradcam", target=one.targets[0]).array, rtol=1e-2, atol=1e-3
        )
        with pytest.raises(camserve.NotFound):
            await client.explain(images[0], model="no-such-model")
        with pytest.raises(camserve.InvalidArgument):
            await client.explain(images[0], model=served.classifier, methods=["no_such_method"])
        with pytest.raises(camserve.DeadlineExceeded):
            await client.explain(images[0], model=served.classifier, timeout=0.001)
    async with camserve.AsyncClient(served.server.address, token="wrong") as bad:
        with pytest.raises(camserve.Unauthenticated):
            await bad.ping()


@pytest.mark.asyncio
async def test_async_vae(served: Served) -> None:
    served.server.require(VAE)
    async with served.async_client() as client:
        result = await client.explain(shape_image(2), model=VAE, regions=[(0, 0, 32, 32)], reconstruction=True)
    assert result.targets == (0,) and result.reconstruction is not None


# ---- CLI against the real server ----


def test_cli_against_the_server(served: Served, tmp_path: Path) -> None:
    conn = ["--address", served.server.address, "--token-file", str(served.server.key_file), "--timeout", "300"]
    images = []
    for i, im in enumerate(served.images(2)):
        p = tmp_path / f"in{i}.png"
        (Image.open(im) if isinstance(im, Path) else Image.fromarray(im)).convert("RGB").save(p)
        images.append(str(p))
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(
        [
            "explain",
            *images,
            "--model",
            served.classifier,
            "--method",
            "gradcam",
            "--out",
            str(tmp_path / "out"),
            *conn,
        ],
        out=out,
        err=err,
    )
    assert code == 0, err.getvalue()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["images"]) == 2 and all("predictions" in r for r in summary["images"])
    assert (tmp_path / "out" / "index.html").exists()
    assert cli.run(["ping", *conn], out=io.StringIO(), err=io.StringIO()) == 0
    assert cli.run(["models", *conn], out=io.StringIO(), err=io.StringIO()) == 0
    assert cli.run(["describe", served.classifier, *conn], out=io.StringIO(), err=io.StringIO()) == 0
    assert (
        cli.run(["ping", "--address", served.server.address, "--token", "bad"], out=io.StringIO(), err=io.StringIO())
        == cli.EXIT_AUTH
    )
    assert (
        cli.run(
            ["explain", images[0], "--model", "no-such-model", "--out", str(tmp_path / "o2"), *conn],
            out=io.StringIO(),
            err=io.StringIO(),
        )
        == cli.EXIT_REJECTED
    )


# ---- the gallery, opened in a browser ----


@pytest.mark.browser
def test_gallery_opens_in_chromium(served: Served, tmp_path: Path) -> None:
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium; deploy/setup.sh --browser)")
    sync_api = pytest.importorskip("playwright.sync_api")
    entries: list[gallery.Entry] = []
    with served.client() as client:
        if SHAPES in served.server.models:
            images = [shape_image(i) for i in range(3)]
            results = client.explain(
                images,
                model=SHAPES,
                methods=["gradcam", "gradcam++", "saliency", "guided_backprop", "guided_gradcam"],
                top_k=2,
            )
            entries += [
                gallery.Entry(f"shape {i}", im, r) for i, (im, r) in enumerate(zip(images, results, strict=True))
            ]
        if VAE in served.server.models:
            regions = [(8, 8, 28, 28), (36, 36, 60, 60)]
            image = shape_image(4)
            result = client.explain(image, model=VAE, regions=regions, reconstruction=True)
            entries.append(gallery.Entry("shape (VAE)", image, result, regions=regions))
        if IMAGENET in served.server.models:
            photos = [SAMPLES / "cat.jpg", SAMPLES / "espresso.jpg"]
            results = client.explain(
                photos, model=IMAGENET, methods=["gradcam", "gradcam++", "guided_backprop", "guided_gradcam"]
            )
            entries += [gallery.Entry(p.name, p, r) for p, r in zip(photos, results, strict=True)]
    index = gallery.write(entries, tmp_path / "gallery", title="camserve gallery test")
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copytree(tmp_path / "gallery", ARTIFACTS / "client-gallery", dirs_exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(index.resolve().as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
            page.screenshot(path=str(ARTIFACTS / "client-gallery.png"), full_page=True)
        finally:
            browser.close()
    expected = 1 + sum(1 + len(e.result.maps) + (2 if e.regions else 0) for e in entries)
    assert len(widths) == expected
    broken = [src for src, width in widths if not width]
    assert not broken, f"images that did not load: {broken}"
    assert (ARTIFACTS / "client-gallery.png").stat().st_size > 10_000
