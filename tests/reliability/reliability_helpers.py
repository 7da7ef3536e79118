"""Builders for the reliability tests: hostile and awkward images, raw gRPC/REST calls, the worker's process ids.

Imported as a top-level module (pytest prepends this folder to ``sys.path``); named to avoid clashing with other
test folders' helpers. Every network call here carries a deadline.
"""

from __future__ import annotations

import io
import json
import math
import struct
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc
from PIL import Image

DEADLINE = 60.0  # s, on every call: generous for a busy 2-core machine, never infinite
MAX_MESSAGE = 32 * 1024 * 1024


# ------------------------------------------------------------------------------------------------------ images
def shapes(count: int, start: int = 0) -> np.ndarray:
    """``count`` demo images ``uint8 [N, 64, 64, 3]`` from the test split (deterministic)."""
    from model_store import data

    return data.make_batch("test", start, count).images


def encode(img: Image.Image, fmt: str = "PNG", **save_args: Any) -> bytes:
    """The bytes of ``img`` saved as ``fmt``."""
    buf = io.BytesIO()
    img.save(buf, fmt, **save_args)
    return buf.getvalue()


def png(image: np.ndarray) -> bytes:
    """A uint8 ``H x W x 3`` array as PNG bytes (lossless: the model sees it bit-exact)."""
    return encode(Image.fromarray(image))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_bomb(width: int, height: int) -> bytes:
    """A real, fully decodable 1-bit grey PNG of ``width`` x ``height`` black pixels: zlib of zeros.

    Unlike a PNG that only lies in its header, every scanline is present, so a decoder that trusts the file
    would allocate and inflate all of it (20000² is 50 MB of scanlines in a ~48 KB file).
    """
    row = 1 + math.ceil(width / 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    scanlines = b"\0" * (row * 1000)
    body = b"".join(compressor.compress(scanlines) for _ in range(height // 1000))
    body += compressor.compress(b"\0" * (row * (height % 1000))) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grey, deflate, no interlace
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def gradient(width: int, height: int) -> np.ndarray:
    """A deterministic uint8 ``H x W x 3`` image with structure in both directions (so rotations show)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx * yy) % 251], axis=-1)
    return rgb.astype(np.uint8)


def exif_rotated_jpeg(width: int, height: int, orientation: int = 6) -> bytes:
    """A ``width`` x ``height`` JPEG whose EXIF orientation tells viewers to rotate it (6 = 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(gradient(width, height)), "JPEG", quality=95, exif=exif.tobytes())


def animated_gif(frames: Sequence[np.ndarray]) -> bytes:
    """An animated GIF of the given RGB frames."""
    images = [Image.fromarray(f) for f in frames]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)


def raw_pixels(values: np.ndarray) -> explain_pb2.Image:
    """An ``Image`` with FLOAT32 pixels ``[3, H, W]`` (bypasses the SDK's own finiteness check)."""
    data = np.ascontiguousarray(values, dtype="<f4")
    tensor = explain_pb2.Tensor(shape=list(data.shape), encoding=explain_pb2.FLOAT32, data=data.tobytes())
    return explain_pb2.Image(pixels=tensor)


def box(x0: int, y0: int, x1: int, y1: int) -> explain_pb2.Region:
    return explain_pb2.Region(box=explain_pb2.Box(x0=x0, y0=y0, x1=x1, y1=y1))


# ------------------------------------------------------------------------------------------------------- calls
def grpc_channel(address: str) -> grpc.Channel:
    """A plaintext channel that sends and receives messages as large as the server's limits."""
    options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
    return grpc.insecure_channel(address, options=options)


@dataclass(frozen=True)
class RawCaller:
    """TorchServe's ``Predictions`` through the generated stubs: what a client in another language sends."""

    stub: inference_pb2_grpc.InferenceAPIsServiceStub
    token: str

    def predict(
        self,
        model: str,
        inputs: Mapping[str, bytes],
        *,
        metadata: Sequence[tuple[str, str]] | None = None,
        timeout: float = DEADLINE,
    ) -> inference_pb2.PredictionResponse:
        """One call; ``metadata`` replaces the default ``authorization: Bearer <inference key>``."""
        sent = (("authorization", f"Bearer {self.token}"),) if metadata is None else tuple(metadata)
        message = inference_pb2.PredictionsRequest(model_name=model, input=dict(inputs))
        return self.stub.Predictions(message, metadata=sent, timeout=timeout)

    def explain(self, model: str, msg: explain_pb2.ExplainRequest) -> explain_pb2.ExplainResponse:
        """An ``ExplainRequest`` in ``input["request"]``; the decoded ``ExplainResponse``."""
        reply = self.predict(model, {"request": msg.SerializeToString()})
        return explain_pb2.ExplainResponse.FromString(reply.prediction)


@dataclass(frozen=True)
class RestReply:
    """An HTTP answer: status, content type and body (errors included, never raised)."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def rest_call(
    url: str,
    body: bytes | None,
    *,
    token: str | None,
    content_type: str | None = "application/octet-stream",
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
) -> RestReply:
    """One HTTP call with a deadline; the answer whatever its status."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if content_type is not None:
        sent["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, headers=sent, method=method)
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE) as reply:
            return RestReply(reply.status, reply.headers.get("Content-Type", ""), reply.read())
    except urllib.error.HTTPError as err:
        return RestReply(err.code, err.headers.get("Content-Type", ""), err.read())


def multipart(fields: Mapping[str, str | bytes]) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body (what ``curl -F`` sends) and its content type."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        binary = isinstance(value, bytes)
        disposition = f'form-data; name="{name}"' + (f'; filename="{name}.bin"' if binary else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        head += "Content-Type: application/octet-stream\r\n" if binary else ""
        parts.append(head.encode() + b"\r\n" + (value if binary else value.encode()) + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def worker_pids(management_url: str, token: str, model: str) -> list[int]:
    """The process ids of ``model``'s workers, from TorchServe's management API (describe)."""
    request = urllib.request.Request(f"{management_url}/models/{model}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return sorted(int(w["pid"]) for w in json.loads(reply.read())[0]["workers"])
