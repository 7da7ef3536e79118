"""A real TorchServe serving camserve, called over gRPC with token auth through the generated stubs.

All tests share the session's server (``camserve_server`` in tests/conftest.py). Every call carries a deadline.
Images are the demo data set's procedural shapes at the model's input size (64 x 64, PNG: lossless), so the model
sees them bit-exact and served maps can be compared with the engine run in this process.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2_grpc
from server_grpc_helpers import (
    CLASSIFIER,
    DEADLINE,
    METHODS,
    VAE,
    Caller,
    as_array,
    describe,
    engine_inputs,
    png,
    request,
    shapes,
)

from handlers.engine import MapKey

pytestmark = pytest.mark.integration

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
