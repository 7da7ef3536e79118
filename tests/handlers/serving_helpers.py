"""Builders shared by the serving-handler tests: encoded images of every awkward kind, requests, a mock context, and
small hand-written model capabilities for the parser and encoder tests (no engine).

Imported as a top-level module (pytest prepends this folder to ``sys.path``); named to avoid clashing with other test
folders' helpers.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from camserve_proto.camserve.v1 import explain_pb2
from PIL import Image

from handlers.preprocess import Preprocessor
from handlers.serving._config import Limits
from handlers.serving._maps import Encoded, decode_array
from handlers.serving._parse import parse_request
from handlers.serving._types import Capabilities, MethodShape, ParsedRequest
from handlers.serving.base import ExplainHandler
from handlers.serving.classifier import ClassifierHandler
from model_store.provider import zoo_model


def encode(img: Image.Image, fmt: str = "PNG", **save_args: Any) -> bytes:
    """The bytes of ``img`` saved as ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, fmt, **save_args)
    return buf.getvalue()


def gradient_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    """A deterministic RGB image with structure (so resampling and crops are visible in tests)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx + yy) % 256], axis=-1)
    noise = rng.integers(0, 30, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def png_bytes(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    """An RGB PNG."""
    return encode(gradient_rgb(width, height, seed))


def request(
    images: Sequence[bytes | explain_pb2.Image],
    *,
    methods: Sequence[str] = (),
    layers: Sequence[str] = (),
    **fields: Any,
) -> explain_pb2.ExplainRequest:
    """An ExplainRequest with encoded images (bytes) or prepared Image messages."""
    msg = explain_pb2.ExplainRequest(methods=list(methods), layers=list(layers), **fields)
    for item in images:
        if isinstance(item, bytes):
            msg.images.add(encoded=item)
        else:
            msg.images.append(item)
    return msg


class FakeRequestProcessor:
    """Per-item request headers and response status/headers, as TorchServe's RequestProcessor keeps them."""

    def __init__(self, headers: Mapping[str, Any] | None = None) -> None:
        self.headers = dict(headers or {})
        self.status: tuple[int, str | None] = (200, None)
        self.response_headers: dict[str, str] = {}

    def get_request_property(self, key: str) -> Any:
        return self.headers.get(key)

    def get_request_properties(self) -> dict[str, Any]:
        return self.headers

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self.status = (code, reason_phrase)

    def add_response_property(self, key: str, value: str) -> None:
        self.response_headers[key] = value


class MockContext:
    """Enough of ``ts.context.Context`` to load and call a handler without a server (after TorchServe's own
    ``ts/torch_handler/unit_tests/test_utils/mock_context.py``, plus per-item headers and response status)."""

    def __init__(
        self,
        model_yaml_config: Mapping[str, Any],
        *,
        model_dir: str = ".",
        gpu_id: int | None = None,
        model_name: str = "test-model",
    ) -> None:
        self.model_name = model_name
        self.manifest = {"model": {"modelName": model_name, "modelVersion": "1.0"}}
        self.system_properties: dict[str, Any] = {"model_dir": model_dir, "gpu_id": gpu_id, "batch_size": 8}
        self.model_yaml_config = dict(model_yaml_config)
        self.request_processor: list[FakeRequestProcessor] = []

    def set_batch(self, headers: Sequence[Mapping[str, Any] | None]) -> None:
        """Per-item request headers for the next call, as TorchServe sets them before ``handle``."""
        self.request_processor = [FakeRequestProcessor(h) for h in headers]

    def get_request_header(self, idx: int, key: str) -> Any:
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> dict[str, Any]:
        return self.request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.request_processor[idx].add_response_property(key, value)

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.request_processor[idx].report_status(code, phrase)


# ---- hand-written capabilities for the parser and encoder tests

#: Limits and preprocessing of the hand-written capabilities below (8x8 inputs).
LIMITS = Limits(max_images=4, max_top_k=2, max_regions=3, max_image_bytes=100_000, max_pixels=10_000)
PRE = Preprocessor((8, 8), 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def loaded_classifier(model_yaml_config: Mapping[str, Any], gpu_id: int | None = 0) -> ClassifierHandler:
    """A classifier handler loaded as TorchServe loads one (its first ``handle``); torchvision models' random weights
    are drawn from seed 0, so every handler built here from the same config has the same weights."""
    torch.manual_seed(0)
    handler = ClassifierHandler(zoo_model)
    handler.handle(None, MockContext(model_yaml_config, gpu_id=gpu_id))
    return handler


def classifier_caps(**overrides: object) -> Capabilities:
    caps = Capabilities(
        kind="classifier",
        methods=("saliency", "gradcam", "guided_gradcam"),
        default_methods=("gradcam",),
        layers=("layer3", "layer4"),
        default_layers=("layer4",),
        layer_methods=frozenset({"gradcam", "guided_gradcam"}),
        layer_grids={"layer3": (4, 4), "layer4": (2, 2)},
        method_shapes={
            "saliency": MethodShape(False, (3, 8, 8)),
            "gradcam": MethodShape(True),
            "guided_gradcam": MethodShape(False, (3, 8, 8)),
        },
        labels=("cat", "dog", "car"),
        num_classes=3,
        input_size=(8, 8),
        limits=LIMITS,
    )
    return replace(caps, **overrides)  # type: ignore[arg-type]


def vae_caps() -> Capabilities:
    return replace(
        classifier_caps(),
        kind="vae",
        methods=("area_saliency", "area_gradcam"),
        default_methods=("area_saliency",),
        layer_methods=frozenset({"area_gradcam"}),
        method_shapes={"area_saliency": MethodShape(False, (3, 8, 8)), "area_gradcam": MethodShape(True)},
        labels=None,
        num_classes=0,
    )


def parse(msg: explain_pb2.ExplainRequest, caps: Capabilities | None = None) -> ParsedRequest:
    return parse_request(msg.SerializeToString(), caps or classifier_caps(), PRE)


GOOD = png_bytes(8, 8)

# ---- calling a handler and reading its answers


def call(
    handler: ExplainHandler[Any], ctx: MockContext, rows: Sequence[dict[str, Any]], headers: Sequence[Any] = ()
) -> list[bytes]:
    """One ``handle`` call with a batch of ``rows`` (per-item ``headers`` optional); one answer per row."""
    ctx.set_batch(list(headers) or [None] * len(rows))
    out = handler.handle(list(rows), ctx)
    assert out is not None and len(out) == len(rows)
    return out


def grpc_row(msg: explain_pb2.ExplainRequest) -> dict[str, Any]:
    """A batch item as a gRPC ``Predictions`` call delivers it."""
    return {"request": msg.SerializeToString()}


def response(body: bytes) -> explain_pb2.ExplainResponse:
    """An answer's ``ExplainResponse``."""
    return explain_pb2.ExplainResponse.FromString(body)


def as_array(tensor: explain_pb2.Tensor) -> np.ndarray:
    """A FLOAT16 / FLOAT32 ``Tensor`` as a numpy array (its scale applied)."""
    names = {explain_pb2.FLOAT16: "FLOAT16", explain_pb2.FLOAT32: "FLOAT32"}
    encoded = Encoded(tuple(tensor.shape), names[tensor.encoding], tensor.data, scale=tensor.scale or 1.0)  # type: ignore[arg-type]
    return decode_array(encoded)


def decoded_maps(result: explain_pb2.ImageResult) -> dict[tuple[str, str, int], np.ndarray]:
    """An image result's maps by (method, layer, target)."""
    return {(m.method, m.layer, m.target): as_array(m.data) for m in result.maps}


def assert_maps_close(a: dict[Any, np.ndarray], b: dict[Any, np.ndarray]) -> None:
    """Same keys in the same order, values equal up to float16 rounding relative to each map's peak."""
    assert list(a) == list(b)
    for key, values in a.items():
        scale = float(np.abs(values).max()) or 1.0
        np.testing.assert_allclose(values, b[key], atol=2e-3 * scale, err_msg=str(key))
