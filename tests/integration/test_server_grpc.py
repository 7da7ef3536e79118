"""A real TorchServe serving camserve, called over gRPC with token auth through the generated stubs.

All tests share the session's server (``camserve_server`` in tests/conftest.py). Every call carries a deadline.
Images are the demo data set's procedural shapes at the model's input size (64 x 64, PNG: lossless), so the model
sees them bit-exact and served maps can be compared with the engine run in this process.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc
from google.protobuf import empty_pb2
from PIL import Image

from handlers.engine import MapKey

pytestmark = pytest.mark.integration

CLASSIFIER = "shapes-classifier"
VAE = "shapes-vae"
DEADLINE = 120.0  # s, on every call: generous for a busy 2-core machine, never infinite
METHODS = ("gradcam", "gradcam++", "saliency", "guided_backprop")
MAX_MESSAGE = 32 * 1024 * 1024


# ------------------------------------------------------------------------------------------------------- helpers


def shapes(count: int, start: int = 0) -> np.ndarray:
    """``count`` demo images ``uint8 [N, 64, 64, 3]`` from the test split (deterministic)."""
    from model_store import data

    return data.make_batch("test", start, count).images


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def pixel_bomb(width: int, height: int) -> bytes:
    """A 1x1 grey PNG whose header claims ``width`` x ``height`` pixels (a few dozen bytes)."""
    one = io.BytesIO()
    Image.new("L", (1, 1)).save(one, format="PNG")
    data = bytearray(one.getvalue())
    # IHDR data starts at byte 16 (8 signature + 4 length + 4 type); its CRC covers type + data (bytes 12..29).
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def as_array(tensor: explain_pb2.Tensor) -> np.ndarray:
    """A float Tensor message as a float32 array."""
    dtype = {explain_pb2.FLOAT16: "<f2", explain_pb2.FLOAT32: "<f4"}[tensor.encoding]
    values = np.frombuffer(tensor.data, dtype=dtype).astype(np.float32).reshape(tuple(tensor.shape))
    return values * np.float32(tensor.scale or 1.0)  # FLOAT16 maps outside float16's normal range travel scaled


def request(images: Sequence[bytes], **fields: Any) -> explain_pb2.ExplainRequest:
    return explain_pb2.ExplainRequest(
        images=[explain_pb2.Image(encoded=b, id=f"img-{i}") for i, b in enumerate(images)], **fields
    )


class Caller:
    """Predictions calls with the inference key and a deadline; decodes ExplainResponse bytes."""

    def __init__(self, stub: inference_pb2_grpc.InferenceAPIsServiceStub, token: str) -> None:
        self.stub = stub
        self.token = token

    def raw(
        self, model: str, inputs: dict[str, bytes], *, token: str | None = None, timeout: float = DEADLINE
    ) -> inference_pb2.PredictionResponse:
        metadata = (("authorization", f"Bearer {self.token if token is None else token}"),)
        message = inference_pb2.PredictionsRequest(model_name=model, input=inputs)
        return self.stub.Predictions(message, metadata=metadata, timeout=timeout)

    def explain(self, msg: explain_pb2.ExplainRequest, model: str = CLASSIFIER) -> explain_pb2.ExplainResponse:
        reply = self.raw(model, {"request": msg.SerializeToString()})
        return explain_pb2.ExplainResponse.FromString(reply.prediction)


@pytest.fixture(scope="module")
def channel(camserve_server: Any) -> Iterator[grpc.Channel]:
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    with grpc.insecure_channel(camserve_server.address, options=options) as ch:
        yield ch


@pytest.fixture(scope="module")
def any_caller(camserve_server: Any, channel: grpc.Channel) -> Caller:
    """A caller for tests of TorchServe's own behaviour (auth, limits, routing): any served model will do."""
    return Caller(inference_pb2_grpc.InferenceAPIsServiceStub(channel), camserve_server.inference_token)


@pytest.fixture(scope="module")
def served(camserve_server: Any) -> str:
    """The model those tests call: the shapes classifier when served, else the first served model."""
    return CLASSIFIER if CLASSIFIER in camserve_server.models else camserve_server.models[0]


@pytest.fixture(scope="module")
def caller(camserve_server: Any, any_caller: Caller) -> Caller:
    camserve_server.require(CLASSIFIER)
    return any_caller


@pytest.fixture(scope="module")
def engine() -> Any:
    """The classifier's engine in this process: the same weights and code the worker runs."""
    from handlers.engine import Explainer
    from model_store import zoo

    return Explainer(zoo.build(CLASSIFIER), labels=zoo.info(CLASSIFIER)["labels"])


def engine_inputs(images: np.ndarray) -> torch.Tensor:
    """What the worker feeds the model for these 64x64 images (mean 0, std 1: pixels / 255)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def describe(caller: Caller, model: str) -> explain_pb2.ModelInfo:
    response = caller.explain(explain_pb2.ExplainRequest(describe=True), model)
    assert not response.HasField("error"), response.error
    return response.model_info


def worker_pids(server: Any, model: str) -> list[int]:
    req = urllib.request.Request(
        f"{server.management_url}/models/{model}", headers={"Authorization": f"Bearer {server.management_token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as reply:
        return sorted(int(w["pid"]) for w in json.loads(reply.read())[0]["workers"])


# ------------------------------------------------------------------------------------------- the main request


@pytest.fixture(scope="module")
def two_layers(caller: Caller) -> tuple[str, str]:
    """The default layer and the spatial layer before it, as the server describes them."""
    info = describe(caller, CLASSIFIER)
    default = info.default_layers[0]
    layers = list(info.layers)
    return layers[layers.index(default) - 1], default


@pytest.fixture(scope="module")
def batch_call(caller: Caller, two_layers: tuple[str, str]) -> tuple[np.ndarray, explain_pb2.ExplainResponse]:
    images = shapes(3)
    msg = request([png(im) for im in images], methods=list(METHODS), layers=list(two_layers), request_id="batch-1")
    return images, caller.explain(msg)


def test_classifier_batch_several_methods_two_layers(
    batch_call: tuple[np.ndarray, explain_pb2.ExplainResponse], two_layers: tuple[str, str]
) -> None:
    _, response = batch_call
    assert not response.HasField("error"), response.error
    assert response.model_name == CLASSIFIER and response.request_id == "batch-1"
    assert [r.id for r in response.results] == ["img-0", "img-1", "img-2"]
    for result in response.results:
        assert not result.HasField("error"), result.error
        top = result.predictions[0]
        assert top.label and 0.0 < top.score <= 1.0
        assert [p.score for p in result.predictions] == sorted((p.score for p in result.predictions), reverse=True)
        keys = {(m.method, m.layer, m.target) for m in result.maps}
        cams = {(m, layer, top.class_id) for m in ("gradcam", "gradcam++") for layer in two_layers}
        grads = {(m, "", top.class_id) for m in ("saliency", "guided_backprop")}
        assert keys == cams | grads
        for m in result.maps:
            array = as_array(m.data)
            assert np.isfinite(array).all() and np.abs(array).max() > 0, (m.method, m.layer)
            if m.layer:  # CAM maps on the layer's grid
                assert array.ndim == 2 and array.shape[0] <= 64 and array.shape[1] <= 64
            else:  # input gradients
                assert array.shape == (3, 64, 64)
        g = result.geometry
        assert (g.original_width, g.original_height, g.input_width, g.input_height) == (64, 64, 64, 64)
        assert (g.crop.x0, g.crop.y0, g.crop.x1, g.crop.y1) == (0, 0, 64, 64)
    assert response.timing.batch_size >= 1 and response.timing.explain_ms > 0


def test_served_maps_equal_in_process_engine(
    batch_call: tuple[np.ndarray, explain_pb2.ExplainResponse], engine: Any, two_layers: tuple[str, str]
) -> None:
    images, response = batch_call
    local = engine.explain(engine_inputs(images), methods=METHODS, layers=two_layers)
    for served, mine in zip(response.results, local, strict=True):
        assert [p.class_id for p in served.predictions] == [p.class_id for p in mine.predictions][
            : len(served.predictions)
        ]
        for p, q in zip(served.predictions, mine.predictions, strict=False):
            assert p.logit == pytest.approx(q.logit, rel=1e-4, abs=1e-4)
            assert p.score == pytest.approx(q.score, rel=1e-4, abs=1e-5)
        assert len(served.maps) == len(mine.maps)
        for m in served.maps:
            expected = mine.maps[MapKey(m.method, m.layer, m.target)].cpu().numpy()
            got = as_array(m.data)
            assert got.shape == expected.shape, (m.method, m.layer)
            scale = max(float(np.abs(expected).max()), 1e-12)
            # float16 keeps ~3 significant digits: relative to the map's own scale.
            np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * scale, err_msg=f"{m.method} {m.layer}")


# -------------------------------------------------------------------------------------------------- batching


def test_concurrent_calls_are_batched_and_answered_in_order(caller: Caller, engine: Any) -> None:
    """16 simultaneous calls (2 of them bad) with batchSize 8: TorchServe batches them; each answer is its own."""
    count = 16
    images = shapes(count, start=100)
    local = engine.explain(engine_inputs(images), methods=("gradcam",))
    bad_image, bad_request = 5, 11
    start = threading.Barrier(count)

    def one(i: int) -> tuple[int, explain_pb2.ExplainResponse]:
        data = png(images[i]) if i != bad_image else png(images[i])[:60]  # a truncated PNG
        msg = explain_pb2.ExplainRequest(
            images=[explain_pb2.Image(encoded=data, id=f"img-{i}")], methods=["gradcam"], request_id=f"req-{i}"
        )
        payload = msg.SerializeToString() if i != bad_request else b"\xff\x00 not a protobuf"
        start.wait(timeout=DEADLINE)
        reply = caller.raw(CLASSIFIER, {"request": payload})
        return i, explain_pb2.ExplainResponse.FromString(reply.prediction)

    with ThreadPoolExecutor(count) as pool:
        answers = dict(pool.map(one, range(count)))

    sizes = [answers[i].timing.batch_size for i in range(count) if i != bad_request]
    assert max(sizes) > 1, f"no batching seen: batch sizes {sizes}"
    assert answers[bad_request].error.code == "INVALID_ARGUMENT" and not answers[bad_request].results
    bad = answers[bad_image]
    assert not bad.HasField("error") and bad.request_id == f"req-{bad_image}"
    assert bad.results[0].error.code == "INVALID_ARGUMENT" and bad.results[0].id == f"img-{bad_image}"
    assert bad.results[0].error.field.startswith("images[0]")
    assert bad.timing.batch_size > 1, "the bad item should have shared a batch with good ones"
    for i in set(range(count)) - {bad_image, bad_request}:
        got = answers[i]
        assert not got.HasField("error"), (i, got.error)
        assert got.request_id == f"req-{i}" and [r.id for r in got.results] == [f"img-{i}"]
        result, mine = got.results[0], local[i]
        assert not result.HasField("error"), (i, result.error)
        assert result.predictions[0].class_id == mine.predictions[0].class_id, i
        assert result.predictions[0].logit == pytest.approx(mine.predictions[0].logit, rel=1e-4, abs=1e-4), i
        (cam,) = result.maps
        expected = next(iter(mine.maps.values())).cpu().numpy()
        np.testing.assert_allclose(as_array(cam.data), expected, rtol=2e-3, atol=2e-3 * float(np.abs(expected).max()))


def test_bad_image_among_good_ones_in_one_request(caller: Caller) -> None:
    images = shapes(3, start=200)
    encoded = [png(images[0]), b"\x89PNG\r\n\x1a\n not really", png(images[2])]
    response = caller.explain(request(encoded, methods=["gradcam"]))
    assert not response.HasField("error"), response.error
    ok0, bad, ok2 = response.results
    assert bad.error.code == "INVALID_ARGUMENT" and bad.error.field.startswith("images[1]") and not bad.maps
    for good in (ok0, ok2):
        assert not good.HasField("error") and good.predictions and len(good.maps) == 1


# --------------------------------------------------------------------------------------------------------- VAE


def test_vae_several_regions(camserve_server: Any, channel: grpc.Channel) -> None:
    camserve_server.require(VAE)
    vae = Caller(inference_pb2_grpc.InferenceAPIsServiceStub(channel), camserve_server.inference_token)
    info = describe(vae, VAE)
    assert info.kind == "vae"
    from model_store import data

    samples = data.make_batch("test", 300, 2)

    def regions(i: int) -> list[explain_pb2.Region]:
        x0, y0, x1, y1 = (int(v) for v in samples.boxes[i])  # the object's own box, then two fixed ones
        boxes = [(x0, y0, x1, y1), (0, 0, 16, 16), (24, 24, 40, 40)]
        return [explain_pb2.Region(box=explain_pb2.Box(x0=a, y0=b, x1=c, y1=d)) for a, b, c, d in boxes]

    msg = explain_pb2.ExplainRequest(
        images=[explain_pb2.Image(encoded=png(samples.images[i]), id=f"vae-{i}", regions=regions(i)) for i in range(2)],
        methods=list(info.default_methods),
        output=explain_pb2.OutputOptions(include_reconstruction=True),
    )
    response = vae.explain(msg, VAE)
    assert not response.HasField("error"), response.error

    # The same images and regions through the VAE engine in this process.
    from handlers.engine import VAEExplainer
    from model_store import zoo

    local = VAEExplainer(zoo.build(VAE), input_size=(64, 64)).explain(
        engine_inputs(samples.images), methods=tuple(info.default_methods), regions=[
            [tuple(int(v) for v in (r.box.x0, r.box.y0, r.box.x1, r.box.y1)) for r in image.regions]
            for image in msg.images
        ],
    )  # fmt: skip
    for result, mine in zip(response.results, local, strict=True):
        assert not result.HasField("error"), result.error
        keys = {(m.method, m.target) for m in result.maps}
        assert keys == {(method, r) for method in info.default_methods for r in range(3)}
        recon = as_array(result.reconstruction)
        assert recon.shape == (3, 64, 64) and recon.min() >= -1e-3 and recon.max() <= 1 + 1e-3
        np.testing.assert_allclose(recon, mine.reconstruction.cpu().numpy(), atol=2e-3)
        assert len(result.maps) == len(mine.maps)
        for m in result.maps:
            got = as_array(m.data)
            assert np.isfinite(got).all() and np.abs(got).max() > 0, (m.method, m.target)
            expected = mine.maps[MapKey(m.method, m.layer, m.target)].cpu().numpy()
            scale = float(np.abs(expected).max())
            np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * scale, err_msg=f"{m.method} {m.target}")


# -------------------------------------------------------------------------------------------------------- REST


def test_raw_image_over_rest_with_bearer_token(camserve_server: Any, caller: Caller) -> None:
    image = shapes(1, start=400)[0]
    body = png(image)
    url = f"{camserve_server.rest_url}/predictions/{CLASSIFIER}"
    headers = {"Authorization": f"Bearer {camserve_server.inference_token}", "Content-Type": "application/octet-stream"}
    with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=DEADLINE) as reply:
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
        answer = json.loads(reply.read())
    via_grpc = caller.explain(request([body])).results[0]
    rest_top = answer["predictions"][0]
    assert rest_top["class_id"] == via_grpc.predictions[0].class_id
    assert rest_top["label"] == via_grpc.predictions[0].label
    assert answer["maps"], "the raw-image path returns the default maps"

    # Without the token TorchServe refuses before the handler runs.
    anonymous = urllib.request.Request(url, data=body, headers={"Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=DEADLINE)
    assert refused.value.code in (400, 401, 403)
    assert "Token Authorization failed" in refused.value.read().decode()


# ------------------------------------------------------------------------------------------ errors and auth


@pytest.mark.parametrize("token", ["", "not-the-key", "management"])
def test_bad_token_is_refused(camserve_server: Any, any_caller: Caller, served: str, token: str) -> None:
    key = camserve_server.management_token if token == "management" else token
    with pytest.raises(grpc.RpcError) as refused:
        any_caller.raw(served, {"request": request([png(shapes(1)[0])]).SerializeToString()}, token=key)
    # TorchServe 0.12 answers PERMISSION_DENIED for a missing, wrong or wrong-kind key.
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "Token Authorization failed" in (refused.value.details() or "")


def test_ping_needs_the_token_and_reports_healthy(camserve_server: Any, channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
    good = (("authorization", f"Bearer {camserve_server.inference_token}"),)
    assert json.loads(stub.Ping(empty_pb2.Empty(), metadata=good, timeout=30).health) == {"status": "Healthy"}
    with pytest.raises(grpc.RpcError) as refused:
        stub.Ping(empty_pb2.Empty(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_unknown_model(any_caller: Caller) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        any_caller.raw("no-such-model", {"request": b""})
    # TorchServe alone answers INTERNAL "Model not found" (DESIGN.md); the gateway gives it its right code.
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Model not found: no-such-model" in (failed.value.details() or "")


def test_max_request_size_is_the_grpc_inbound_limit(any_caller: Caller, served: str) -> None:
    """deploy/config.properties max_request_size (16 MiB) bounds a gRPC call: just under reaches the handler
    (which answers in band), just over is refused by the gateway before any worker sees it, naming the limit."""
    limit = 16 * 1024 * 1024
    overhead = 64  # PredictionsRequest framing around the payload: model name, map entry, key
    under = any_caller.raw(served, {"request": b"\0" * (limit - overhead)})
    assert explain_pb2.ExplainResponse.FromString(under.prediction).error.code == "INVALID_ARGUMENT"
    with pytest.raises(grpc.RpcError) as refused:
        any_caller.raw(served, {"request": b"\0" * (limit + 1)})
    # TorchServe alone resets the stream (grpcio reports CANCELLED, no limit named); the gateway says what and why.
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_request_size of 16,777,216 bytes" in refused.value.details()


def test_keeps_serving_after_bad_input(camserve_server: Any, caller: Caller) -> None:
    """Hostile and broken requests get answers in band; the worker process is never replaced."""
    before = worker_pids(camserve_server, CLASSIFIER)
    good = png(shapes(1, start=500)[0])
    bomb = pixel_bomb(10_000, 10_000)
    cases: list[tuple[dict[str, bytes], str]] = [
        ({"request": b"\x08\x96\x01 garbage"}, "INVALID_ARGUMENT"),
        ({"request": request([]).SerializeToString()}, "INVALID_ARGUMENT"),
        ({"request": request([good] * 17).SerializeToString()}, "RESOURCE_EXHAUSTED"),
        ({"request": request([good], methods=["telepathy"]).SerializeToString()}, "INVALID_ARGUMENT"),
        ({"request": request([good], layers=["no.such.layer"]).SerializeToString()}, "NOT_FOUND"),
        (
            {
                "request": request(
                    [good] * 16,  # 16 images x 6 classes x ~213 kB of float32 maps: ~20 MB > 15 MB
                    methods=["saliency", "guided_backprop", "deconvnet", "guided_gradcam", "gradcam"],
                    target=explain_pb2.Target(top_k=6),
                    output=explain_pb2.OutputOptions(encoding=explain_pb2.FLOAT32, resolution=explain_pb2.INPUT),
                ).SerializeToString()
            },
            "RESOURCE_EXHAUSTED",
        ),
    ]
    for inputs, code in cases:
        response = explain_pb2.ExplainResponse.FromString(caller.raw(CLASSIFIER, inputs).prediction)
        assert response.error.code == code, (code, response.error)
        assert response.error.message
    image_level = caller.explain(request([bomb, good[: len(good) // 2]]))
    assert [r.error.code for r in image_level.results] == ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"]
    # Still serving, by the same worker process.
    fine = caller.explain(request([good]))
    assert not fine.HasField("error") and not fine.results[0].HasField("error") and fine.results[0].maps
    assert worker_pids(camserve_server, CLASSIFIER) == before


# ---------------------------------------------------------------------------------------- wire compatibility


def test_wire_compatible_with_torchserves_own_proto(
    camserve_server: Any, any_caller: Caller, served: str, tmp_path: Path
) -> None:
    """Stubs compiled now from the inference.proto inside TorchServe's jar call our server and get our answer."""
    msg = request([png(im) for im in shapes(2, start=600)], methods=["gradcam"])
    ours = any_caller.explain(msg, served)
    (tmp_path / "request.bin").write_bytes(msg.SerializeToString())
    script = Path(__file__).with_name("torchserve_proto_call.py")
    run = subprocess.run(
        [
            sys.executable, str(script), str(tmp_path / "work"), camserve_server.address,
            camserve_server.inference_token, served, str(tmp_path / "request.bin"), str(tmp_path / "response.bin"),
        ],
        capture_output=True, text=True, timeout=DEADLINE + 60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["health"] == {"status": "Healthy"}
    assert summary["package"] == "org.pytorch.serve.grpc.inference"
    assert summary["status_type"] == "google.rpc.Status"  # TorchServe's file, not our copy
    assert summary["proto_file"].startswith(str(tmp_path)) and not summary["camserve_imported"]
    theirs = explain_pb2.ExplainResponse.FromString((tmp_path / "response.bin").read_bytes())
    assert not theirs.HasField("error"), theirs.error
    assert [r.id for r in theirs.results] == ["img-0", "img-1"]
    assert [[p.class_id for p in r.predictions] for r in theirs.results] == [
        [p.class_id for p in r.predictions] for r in ours.results
    ]
