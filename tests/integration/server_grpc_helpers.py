"""What the gRPC tests of a real TorchServe share (test_server_grpc*.py): the shapes images, request building,
the Caller with the inference key and a deadline, and reading the engine and the workers.
"""

from __future__ import annotations

import io
import json
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc
from PIL import Image

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
