"""The default answer to prediction + Grad-CAM on a 224x224 ResNet-50 request stays under 2 KB (issue 12).

A real handler and a real encode: torchvision's ResNet-50 (random weights, nothing downloads) with the model config
``model_store.archive`` generates for it (ImageNet labels, 224x224 input), one 224x224 PNG, ``methods: [gradcam]``
and the request's default output (native-resolution FLOAT16 maps, default top predictions). The Grad-CAM map is the
last stage's 7x7 grid: 49 float16 values, 98 bytes; the predictions' labels and the echoed versions are most of the
rest. No timing is asserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import MockContext, as_array, call, grpc_row, png_bytes, request, response

from handlers.serving.classifier import ClassifierHandler
from model_store import archive
from model_store.provider import zoo_model

LIMIT_BYTES = 2048


def resnet50_config() -> dict[str, Any]:
    config = archive.torchvision_config("resnet50", "unused.pt")
    config["camserve"]["weights"] = None  # random weights, as the service benchmark's archive has
    return config


@pytest.fixture(scope="module")
def resnet50() -> Iterator[tuple[ClassifierHandler, MockContext]]:
    torch.manual_seed(0)
    handler = ClassifierHandler(zoo_model)
    ctx = MockContext(resnet50_config(), gpu_id=0, model_name="resnet50")
    handler.handle(None, ctx)
    yield handler, ctx


def test_prediction_and_gradcam_answer_is_under_2_kb(resnet50: tuple[ClassifierHandler, MockContext]) -> None:
    handler, ctx = resnet50
    msg = request([png_bytes(224, 224, seed=5)], methods=["gradcam"], request_id="size-check")
    (body,) = call(handler, ctx, [grpc_row(msg)])
    answer = response(body)
    (result,) = answer.results
    assert not result.HasField("error"), result.error.message
    (gradcam,) = result.maps
    assert gradcam.method == "gradcam" and gradcam.layer == "layer4"
    assert gradcam.data.encoding == explain_pb2.FLOAT16 and list(gradcam.data.shape) == [7, 7]
    assert len(gradcam.data.data) == 7 * 7 * 2 and as_array(gradcam.data).shape == (7, 7)
    assert result.predictions and all(p.label for p in result.predictions)  # ImageNet names are in the answer
    assert len(body) < LIMIT_BYTES, f"{len(body)} bytes"


def test_the_full_bundle_is_larger_and_still_native(resnet50: tuple[ClassifierHandler, MockContext]) -> None:
    """The size check above can fail: the same request with pixel-level maps is far over the limit."""
    handler, ctx = resnet50
    msg = request([png_bytes(224, 224, seed=5)], methods=["gradcam", "saliency"], request_id="bundle")
    (body,) = call(handler, ctx, [grpc_row(msg)])
    saliency = next(m for m in response(body).results[0].maps if m.method == "saliency")
    assert list(saliency.data.shape)[-2:] == [224, 224]
    assert len(body) > 224 * 224 * 2 > LIMIT_BYTES
