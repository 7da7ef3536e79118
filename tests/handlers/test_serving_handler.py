"""The classifier handler end to end with a mock TorchServe context: batching, isolation, REST, describe, errors.

The model is a real torchvision ResNet-18 with random weights (nothing downloads) at a 64x64 input, built through
``model_store.zoo`` (the provider an archive's entry file passes) as an archive would build it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import (
    MockContext,
    assert_maps_close,
    call,
    decoded_maps,
    encode,
    gradient_rgb,
    grpc_row,
    loaded_classifier,
    png_bytes,
    request,
    response,
)

from handlers.engine import Explainer
from handlers.engine.errors import DeadlineExceededError, InvalidArgumentError, NotFoundError, ResourceExhaustedError
from handlers.serving import _health, _routing
from handlers.serving._health import exit_if_sticky_cuda_error, is_sticky_cuda_error
from handlers.serving.classifier import ClassifierHandler
from model_store.provider import zoo_model

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def config(**overrides: Any) -> dict[str, Any]:
    section = {
        "kind": "classifier",
        "model": "torchvision:resnet18",
        "input_size": [64, 64],
        "resize": 64,
        "mean": MEAN,
        "std": STD,
        "default_methods": ["gradcam", "saliency"],
        "limits": {"max_images": 8, "max_top_k": 10, "max_response_bytes": 2_000_000},
    }
    section.update(overrides)
    return {"minWorkers": 1, "batchSize": 8, "camserve": section}


@pytest.fixture(scope="module")
def handler() -> ClassifierHandler:
    return loaded_classifier(config())


@pytest.fixture
def ctx() -> MockContext:
    return MockContext(config(), gpu_id=0)


def assert_same_result(a: explain_pb2.ImageResult, b: explain_pb2.ImageResult) -> None:
    assert [p.class_id for p in a.predictions] == [p.class_id for p in b.predictions]
    np.testing.assert_allclose([p.score for p in a.predictions], [p.score for p in b.predictions], rtol=1e-4)
    assert_maps_close(decoded_maps(a), decoded_maps(b))


def three_requests() -> list[explain_pb2.ExplainRequest]:
    a = request([png_bytes(64, 64, seed=1)], methods=["gradcam", "saliency"], request_id="a")
    b = request([png_bytes(96, 64, seed=2), png_bytes(64, 80, seed=3)], methods=["gradcam", "saliency"], request_id="b")
    b.target.top_k = 2
    c = request([png_bytes(64, 64, seed=4)], methods=["gradcam++"], layers=["layer3", "layer4"], request_id="c")
    c.target.class_names.extend(["goldfish", "tench"])
    return [a, b, c]


# ---- load


def test_initialize_reads_config_and_falls_back_to_cpu(handler: ClassifierHandler) -> None:
    loaded = handler.loaded
    assert not torch.cuda.is_available() and loaded.device == torch.device("cpu")
    caps = loaded.caps
    assert caps.default_methods == ("gradcam", "saliency") and caps.default_layers == ("layer4",)
    assert caps.num_classes == 1000 and caps.labels is not None and caps.labels[0] == "tench"
    assert caps.layer_grids["layer4"] == (2, 2) and caps.layer_grids["layer3"] == (4, 4)
    assert caps.map_shape("saliency", "") == (3, 64, 64) and caps.map_shape("guided_gradcam", "layer3") == (3, 64, 64)
    assert caps.limits.max_response_bytes == 2_000_000
    assert loaded.model_name == "test-model" and loaded.model_version == "1.0"


@pytest.mark.parametrize(
    ("overrides", "error", "field"),
    [
        ({"kind": "vae"}, InvalidArgumentError, "camserve.kind"),
        ({"weights": "missing.pt"}, NotFoundError, "camserve.weights"),
        ({"max_images": 2}, InvalidArgumentError, "camserve.max_images"),
        ({"default_methods": ["gradcam", "area_saliency"]}, InvalidArgumentError, "camserve.default_methods"),
        ({"labels": ["a", "b"]}, InvalidArgumentError, "camserve.labels"),
    ],
)
def test_bad_config_fails_at_load(overrides: dict[str, Any], error: type[Exception], field: str, tmp_path: Any) -> None:
    h = ClassifierHandler(zoo_model)
    with pytest.raises(error) as err:
        h.handle(None, MockContext(config(**overrides), model_dir=str(tmp_path)))
    assert getattr(err.value, "field", None) == field
    assert not h.initialized


def test_entry_file_initialises_on_handle_none(monkeypatch: pytest.MonkeyPatch, handler: ClassifierHandler) -> None:
    from model_store import entry_classifier

    monkeypatch.setattr(entry_classifier, "_handler", handler)
    assert entry_classifier.handle(None, MockContext(config())) is None
    ctx = MockContext(config())
    ctx.set_batch([None])
    [out] = entry_classifier.handle([grpc_row(request([png_bytes()]))], ctx)
    assert response(out).results[0].maps


# ---- batches


def test_good_batch_matches_running_each_request_alone(handler: ClassifierHandler, ctx: MockContext) -> None:
    msgs = three_requests()
    together = [response(b) for b in call(handler, ctx, [grpc_row(m) for m in msgs])]
    for msg, got in zip(msgs, together, strict=True):
        [alone_body] = call(handler, ctx, [grpc_row(msg)])
        alone = response(alone_body)
        assert got.request_id == msg.request_id and not got.error.code
        assert got.timing.batch_size == 3 and alone.timing.batch_size == 1
        assert len(got.results) == len(msg.images)
        for a, b in zip(got.results, alone.results, strict=True):
            assert not a.error.code and a.maps
            assert_same_result(a, b)
    b_result = together[1].results[0]
    assert [(m.method, m.layer) for m in b_result.maps] == [("gradcam", "layer4")] * 2 + [("saliency", "")] * 2
    assert [m.target for m in b_result.maps[:2]] == [p.class_id for p in b_result.predictions[:2]]
    c_result = together[2].results[0]
    assert [(m.layer, m.target) for m in c_result.maps] == [("layer3", 1), ("layer3", 0), ("layer4", 1), ("layer4", 0)]
    assert together[1].results[0].geometry.crop.x0 == 16  # 96x64 -> centre 64x64 crop


def test_bad_items_fail_alone(handler: ClassifierHandler, ctx: MockContext) -> None:
    good = request([png_bytes(64, 64, seed=7)], methods=["gradcam"])
    rows = [
        grpc_row(good),
        {"request": b"\x0a\xff\xff"},  # malformed protobuf
        grpc_row(request([png_bytes()], methods=["occlusion"])),  # unknown method
        grpc_row(request([png_bytes(seed=8), b"GIF89a-truncated", png_bytes(seed=9)], methods=["gradcam"])),
        grpc_row(good),
    ]
    out = [response(b) for b in call(handler, ctx, rows)]
    assert not out[0].error.code and not out[4].error.code
    assert (out[1].error.code, out[1].error.field) == ("INVALID_ARGUMENT", "request")
    assert (out[2].error.code, out[2].error.field) == ("INVALID_ARGUMENT", "methods[0]")
    mixed = out[3]
    assert not mixed.error.code
    assert mixed.results[1].error.field == "images[1].encoded" and not mixed.results[1].maps
    assert mixed.results[0].maps and mixed.results[2].maps
    [alone] = call(handler, ctx, [grpc_row(good)])
    assert_same_result(out[0].results[0], response(alone).results[0])
    assert_same_result(out[4].results[0], response(alone).results[0])


def test_served_maps_equal_the_in_process_engine(handler: ClassifierHandler, ctx: MockContext) -> None:
    rng = np.random.default_rng(5)
    pixels = rng.random((3, 64, 64), dtype=np.float32)
    msg = explain_pb2.ExplainRequest(methods=["gradcam", "guided_backprop"], layers=["layer3"])
    msg.images.add().pixels.CopyFrom(
        explain_pb2.Tensor(shape=[3, 64, 64], encoding=explain_pb2.FLOAT32, data=pixels.tobytes())
    )
    msg.target.class_ids.extend([3, 1])
    [body] = call(handler, ctx, [grpc_row(msg)])
    served = decoded_maps(response(body).results[0])
    x = (torch.from_numpy(pixels) - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    [reference] = Explainer(handler.loaded.model, input_size=(64, 64)).explain(
        x[None], methods=("gradcam", "guided_backprop"), layers=("layer3",), targets=[[3, 1]]
    )
    assert len(served) == len(reference.maps) == 4
    for key, values in reference.maps.items():
        expected = values.numpy()
        np.testing.assert_allclose(served[tuple(key)], expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def test_groups_share_one_engine_call_and_targets_stay_per_image(
    handler: ClassifierHandler, ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = handler.explain_group

    def spy(parsed: Any, images: Sequence[Any]) -> Any:
        calls.append(len(images))
        return original(parsed, images)

    monkeypatch.setattr(handler, "explain_group", spy)
    top2 = request([png_bytes(seed=11)], methods=["gradcam"])
    top2.target.top_k = 2
    top1 = request([png_bytes(seed=12), png_bytes(seed=13)], methods=["gradcam"])
    ids = request([png_bytes(seed=14)], methods=["gradcam"])
    ids.target.class_ids.append(5)
    other = request([png_bytes(seed=15)], methods=["saliency"])
    out = [response(b) for b in call(handler, ctx, [grpc_row(m) for m in (top2, top1, ids, other)])]
    assert sorted(calls) == [1, 1, 3]  # top-k images of both requests in one call; class ids and saliency apart
    assert [len(r.maps) for r in [*out[0].results, *out[1].results]] == [2, 1, 1]
    assert [m.target for m in out[2].results[0].maps] == [5]
    assert all(r.timing.batch_size == 4 for r in out)


def test_engine_failure_reaches_only_its_group(
    handler: ClassifierHandler, ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = handler.explainer.explain

    def flaky(images: torch.Tensor, methods: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        if "saliency" in methods:
            raise ResourceExhaustedError("the device ran out of memory explaining a single image")
        return original(images, methods, *args, **kwargs)

    monkeypatch.setattr(handler.explainer, "explain", flaky)
    rows = [grpc_row(request([png_bytes(seed=s)], methods=[m])) for s, m in ((1, "gradcam"), (2, "saliency"))]
    ok, failed = (response(b) for b in call(handler, ctx, rows))
    assert ok.results[0].maps and not ok.results[0].error.code
    assert failed.results[0].error.code == "RESOURCE_EXHAUSTED" and not failed.error.code


def test_a_bug_is_answered_in_band_never_raised(
    handler: ClassifierHandler, ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyError("internal secret")

    monkeypatch.setattr(handler, "inference", broken)
    rows = [grpc_row(request([png_bytes()])), {"body": png_bytes()}]
    proto_body, json_body = call(handler, ctx, rows)
    err = response(proto_body).error
    assert err.code == "INTERNAL" and "secret" not in err.message
    assert json.loads(json_body)["error"]["code"] == "INTERNAL"
    assert ctx.request_processor[1].status[0] == 500


def test_sticky_cuda_errors_exit_the_worker(
    handler: ClassifierHandler, ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(_health.os, "_exit", exits.append)

    def poisoned(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(handler.explainer, "explain", poisoned)
    [body] = call(handler, ctx, [grpc_row(request([png_bytes()]))])
    assert exits == [_health.STICKY_EXIT_STATUS]
    assert response(body).results[0].error.code == "UNAVAILABLE"


def test_sticky_cuda_error_detection() -> None:
    assert is_sticky_cuda_error(RuntimeError("CUDA error: device-side assert triggered"))
    wrapped = ValueError("batch failed")
    wrapped.__cause__ = RuntimeError("CUDA error: an illegal memory access was encountered")
    assert is_sticky_cuda_error(wrapped)
    assert not is_sticky_cuda_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_sticky_cuda_error(ValueError("bad image"))
    exits: list[int] = []
    assert exit_if_sticky_cuda_error(ValueError("bad image"), exit_fn=exits.append) is False and exits == []
    assert exit_if_sticky_cuda_error(wrapped, exit_fn=exits.append) is True and exits == [70]


def test_response_size_is_refused_before_the_engine_runs(
    handler: ClassifierHandler, ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(handler, "explain_group", lambda parsed, images: calls.append(len(images)))
    big = request([png_bytes(seed=s) for s in range(8)], methods=["saliency", "guided_backprop", "deconvnet"])
    big.target.top_k = 10
    big.output.encoding = explain_pb2.FLOAT32
    [body] = call(handler, ctx, [grpc_row(big)])
    err = response(body).error
    assert err.code == "RESOURCE_EXHAUSTED" and err.field == "output" and "2000000" in err.message
    assert calls == []


# ---- REST


def test_rest_raw_image_gets_readable_json(handler: ClassifierHandler, ctx: MockContext) -> None:
    image = encode(gradient_rgb(120, 90, seed=3), "JPEG")
    rows = [{"body": bytearray(image), "methods": b"gradcam,saliency", "top_k": "2"}]
    [body] = call(handler, ctx, rows, headers=[{"body": {"content-type": "image/jpeg"}}])
    doc = json.loads(body)
    assert ctx.request_processor[0].response_headers["content-type"] == "application/json"
    assert ctx.request_processor[0].status[0] == 200
    assert len(doc["predictions"]) == 5 and doc["predictions"][0]["label"]
    maps = doc["maps"]
    assert [(m["method"], m["layer"]) for m in maps] == [("gradcam", "layer4")] * 2 + [("saliency", "")] * 2
    assert np.array(maps[0]["values"]).shape == (2, 2) and "png" in maps[0]
    assert maps[2]["shape"] == [3, 64, 64] and "values" not in maps[2]  # 12288 values: PNG only
    assert doc["geometry"] == {"original_size": [120, 90], "crop": [15, 0, 105, 90], "input_size": [64, 64]}


def test_rest_errors_have_http_status_and_hints(handler: ClassifierHandler, ctx: MockContext) -> None:
    rows = [
        {"body": b"not an image"},
        {"body": png_bytes(), "layers": "nope"},
        {"\x89PNG\r\n\x1a\n\x00\x00": b""},  # what curl --data-binary (form-urlencoded) turns an image into
        {"data": {"image": "json"}},  # a JSON body, already decoded by TorchServe
    ]
    out = [json.loads(b)["error"] for b in call(handler, ctx, rows)]
    assert (out[0]["code"], out[0]["field"]) == ("INVALID_ARGUMENT", "body")
    assert (out[1]["code"], out[1]["field"]) == ("NOT_FOUND", "layers[0]")
    assert "curl -T" in out[2]["message"]
    assert out[3]["code"] == "INVALID_ARGUMENT" and "JSON" in out[3]["message"]
    assert [p.status[0] for p in ctx.request_processor] == [400, 404, 400, 400]


def test_rest_protobuf_body_is_answered_in_protobuf(handler: ClassifierHandler, ctx: MockContext) -> None:
    msg = request([png_bytes(seed=21)], methods=["gradcam"], request_id="rest-pb")
    headers = [{"body": {"content-type": "application/x-protobuf"}}, {"Content-Type": "application/protobuf"}]
    out = call(handler, ctx, [{"body": msg.SerializeToString()}, {"data": msg.SerializeToString()}], headers=headers)
    for i, body in enumerate(out):
        got = response(body)
        assert got.request_id == "rest-pb" and got.results[0].maps
        assert ctx.request_processor[i].response_headers["content-type"] == "application/x-protobuf"
        assert ctx.request_processor[i].status[0] == 200


# ---- describe


def test_describe_over_grpc_and_management_api(handler: ClassifierHandler, ctx: MockContext) -> None:
    rows = [grpc_row(explain_pb2.ExplainRequest(describe=True, request_id="d")), {}]
    proto_body, json_body = call(handler, ctx, rows, headers=[None, {"describe": "True"}])
    info = response(proto_body).model_info
    assert info.kind == "classifier" and list(info.default_methods) == ["gradcam", "saliency"]
    assert "layer4" in info.layers and list(info.default_layers) == ["layer4"]
    assert len(info.labels) == 1000 and (info.input_width, info.input_height) == (64, 64)
    assert info.max_images == 8 and info.max_response_bytes == 2_000_000 and info.max_pixels == 40_000_000
    assert "cam" in info.methods
    doc = json.loads(json_body)
    assert doc["model"] == "test-model" and doc["default_layers"] == ["layer4"]


# ---- state


def test_no_request_state_survives_a_batch(handler: ClassifierHandler, ctx: MockContext) -> None:
    probe = request([png_bytes(seed=31)], methods=["gradcam", "saliency"], request_id="probe")
    before_state = {k: id(v) for k, v in vars(handler).items()}
    [first] = call(handler, ctx, [grpc_row(probe)])
    noisy = [*three_requests(), request([b"junk"], methods=["gradcam++"], layers=["layer2"])]
    noisy[0].output.encoding = explain_pb2.PNG
    noisy[1].output.resolution = explain_pb2.INPUT
    call(handler, ctx, [grpc_row(m) for m in noisy] + [{"body": png_bytes(), "top_k": "3"}])
    [again] = call(handler, ctx, [grpc_row(probe)])
    assert {k: id(v) for k, v in vars(handler).items()} == before_state
    a, b = response(first), response(again)
    assert a.results[0].maps[0].data.encoding == explain_pb2.FLOAT16
    assert a.results[0].SerializeToString() == b.results[0].SerializeToString()


def test_expired_items_are_answered_deadline_exceeded_without_being_computed(
    handler: ClassifierHandler, ctx: MockContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's deadline key: a job whose caller's deadline passed in the queue costs no engine call."""
    import time

    good = grpc_row(request([png_bytes(seed=3)], methods=["gradcam"]))
    now_ms = time.time() * 1000
    expired = {**good, _routing.DEADLINE_KEY: str(int(now_ms - 50)).encode()}
    live = {**good, _routing.DEADLINE_KEY: str(int(now_ms + 60_000)).encode()}
    garbled = {**good, _routing.DEADLINE_KEY: b"soon"}
    calls: list[int] = []
    explain_group = handler.explain_group

    def counted(parsed: Any, images: Sequence[Any]) -> Any:
        calls.append(len(images))
        return explain_group(parsed, images)

    monkeypatch.setattr(handler, "explain_group", counted)
    out = [response(b) for b in call(handler, ctx, [expired, live, garbled])]
    assert out[0].error.code == "DEADLINE_EXCEEDED" and "not computed" in out[0].error.message
    assert not out[1].error.code and out[1].results[0].maps
    assert (out[2].error.code, out[2].error.field) == ("INVALID_ARGUMENT", _routing.DEADLINE_KEY)
    assert calls == [1], "only the live item reached the engine"


def test_check_deadline_reads_the_key_as_unix_ms() -> None:
    _routing.check_deadline({"request": b""})  # no key: no deadline
    _routing.check_deadline({_routing.DEADLINE_KEY: "2000"}, now=1.0)  # 1 s before a deadline of 2 s
    with pytest.raises(DeadlineExceededError, match="1000 ms"):
        _routing.check_deadline({_routing.DEADLINE_KEY: "2000"}, now=3.0)
