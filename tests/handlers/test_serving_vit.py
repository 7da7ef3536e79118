"""A vision transformer served end to end (mock TorchServe context): token-grid CAMs and the attention methods over
gRPC and REST, listed by describe, equal to the in-process engine; the attention methods refused on a CNN.

The model is a small torchvision ``VisionTransformer`` (64x64 input, 16x16 patches, two blocks, random weights with
the zero-initialised head re-drawn), given to the handler by a test provider as an archive's entry file would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import MockContext, call, decoded_maps, grpc_row, png_bytes, request, response
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from handlers.engine import Explainer, get_method
from handlers.serving import ServedModel, ServingConfig
from handlers.serving.classifier import ClassifierHandler
from model_store.provider import zoo_model

NEW = ("hirescam", "eigencam", "attention_rollout", "attention_rollout_max", "gradient_attention")
LAYER = "encoder.layers.encoder_layer_1.ln_1"


def _small_vit(config: ServingConfig, weights: Path | None) -> ServedModel:
    torch.manual_seed(0)
    model = VisionTransformer(image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64)
    nn.init.normal_(model.heads.head.weight, std=0.5)
    return ServedModel(model, None)


def config() -> dict[str, Any]:
    section = {
        "kind": "classifier",
        "model": "test:small-vit",
        "input_size": [64, 64],
        "resize": 64,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "limits": {"max_images": 4, "max_top_k": 5, "max_response_bytes": 2_000_000},
    }
    return {"minWorkers": 1, "batchSize": 4, "camserve": section}


@pytest.fixture(scope="module")
def handler() -> Iterator[ClassifierHandler]:
    h = ClassifierHandler(_small_vit)
    h.handle(None, MockContext(config(), gpu_id=0))
    yield h


@pytest.fixture
def ctx() -> MockContext:
    return MockContext(config(), gpu_id=0)


def test_describe_lists_the_attention_methods_and_the_token_layer(handler: ClassifierHandler, ctx: MockContext) -> None:
    [body] = call(handler, ctx, [grpc_row(explain_pb2.ExplainRequest(describe=True))])
    info = response(body).model_info
    assert set(NEW) <= set(info.methods)
    assert list(info.default_layers) == [LAYER]


def test_grpc_maps_equal_the_in_process_engine(handler: ClassifierHandler, ctx: MockContext) -> None:
    pixels = np.random.default_rng(5).random((3, 64, 64), dtype=np.float32)
    msg = explain_pb2.ExplainRequest(methods=["gradcam", *NEW])
    msg.images.add().pixels.CopyFrom(
        explain_pb2.Tensor(shape=[3, 64, 64], encoding=explain_pb2.FLOAT32, data=pixels.tobytes())
    )
    msg.target.class_ids.extend([3, 1])
    [body] = call(handler, ctx, [grpc_row(msg)])
    served = decoded_maps(response(body).results[0])
    x = (torch.from_numpy(pixels) - 0.5) / 0.5
    [reference] = Explainer(handler.loaded.model, input_size=(64, 64)).explain(
        x[None], methods=("gradcam", *NEW), targets=[[3, 1]]
    )
    assert len(served) == len(reference.maps) == 12
    for key, values in reference.maps.items():
        expected = values.numpy()
        assert expected.shape == (4, 4) and key.layer == ("" if get_method(key.method).scope == "input" else LAYER)
        got = served[(key.method, key.layer, key.target)]
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * float(np.abs(expected).max()))


def test_rest_form_fields_reach_the_attention_methods(handler: ClassifierHandler, ctx: MockContext) -> None:
    rows = [{"body": bytearray(png_bytes(80, 64, seed=2)), "methods": b"attention_rollout,gradient_attention,eigencam"}]
    [body] = call(handler, ctx, rows, headers=[{"body": {"content-type": "image/png"}}])
    doc = json.loads(body)
    assert ctx.request_processor[0].status[0] == 200, doc
    got = [(m["method"], m["layer"], m["shape"]) for m in doc["maps"]]
    assert got == [("attention_rollout", "", [4, 4]), ("gradient_attention", "", [4, 4]), ("eigencam", LAYER, [4, 4])]


def test_rollout_on_a_cnn_is_invalid_argument_naming_the_field() -> None:
    cnn = {**config(), "camserve": {**config()["camserve"], "model": "torchvision:resnet18"}}
    h = ClassifierHandler(zoo_model)
    h.handle(None, MockContext(cnn, gpu_id=0))
    ctx = MockContext(cnn, gpu_id=0)
    [body] = call(h, ctx, [grpc_row(request([png_bytes()], methods=["hirescam", "attention_rollout"]))])
    error = response(body).error
    assert (error.code, error.field) == ("INVALID_ARGUMENT", "methods[1]")
    assert "attention_rollout" in error.message
