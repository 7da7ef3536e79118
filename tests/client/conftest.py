"""An in-process fake of camserve's gRPC surface for client tests: no TorchServe, no torch.

The fake implements the generated ``InferenceAPIsService`` (and ``ManagementAPIsService``) servicers on a loopback
port, decodes each ``ExplainRequest`` the way the real handler does at the contract level, and answers with a
crafted ``ExplainResponse``. Tests steer it through ``FakeServer`` attributes: failures to inject, delays, the token
it expects, a custom answer function, and it records what it received (requests, metadata, concurrency).
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import camserve
import grpc
import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc
from camserve_proto.org.pytorch.serve.grpc.management import management_pb2, management_pb2_grpc
from PIL import Image

LABELS = ("circle", "square", "triangle", "star", "cross")
INPUT = 32  # fake model input size (square)
CAM = 4  # fake Grad-CAM grid


def image_size(image: explain_pb2.Image) -> tuple[int, int]:
    """(height, width) of an Image message, decoding encoded bytes like the server would."""
    if image.HasField("pixels"):
        _, h, w = image.pixels.shape
        return int(h), int(w)
    with Image.open(io.BytesIO(image.encoded)) as im:
        return im.height, im.width


def tensor(array: np.ndarray, encoding: int = explain_pb2.FLOAT16) -> explain_pb2.Tensor:
    """Encodes an array the way the server does (float16 by default)."""
    a = np.asarray(array, dtype=np.float32)
    t = explain_pb2.Tensor(shape=list(a.shape), encoding=encoding)
    if encoding == explain_pb2.FLOAT32:
        t.data = a.astype("<f4").tobytes()
    elif encoding in (explain_pb2.FLOAT16, explain_pb2.ENCODING_UNSPECIFIED):
        t.data = a.astype("<f2").tobytes()
    else:
        lo, hi = float(a.min()), float(a.max())
        q = np.round((a - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8)
        t.value_min, t.value_max = lo, hi
        if encoding == explain_pb2.UINT8:
            t.data = q.tobytes()
        else:
            buf = io.BytesIO()
            Image.fromarray(q.transpose(1, 2, 0) if q.ndim == 3 else q).save(buf, format="PNG")
            t.data = buf.getvalue()
    return t


def default_answer(request: explain_pb2.ExplainRequest, model: str) -> explain_pb2.ExplainResponse:
    """A plausible classifier (or, for model "vae", VAE) answer whose values identify each image.

    Every map of image i is filled with ``i + 1`` (CAM maps) / ``-(i + 1)`` (channel 2 of gradient maps) so tests
    can check ordering; an image whose encoded bytes are ``b"BAD"`` gets an in-band INVALID_ARGUMENT.
    """
    response = explain_pb2.ExplainResponse(model_name=model, model_version="1.0", request_id=request.request_id)
    response.timing.decode_ms, response.timing.explain_ms, response.timing.encode_ms = 1.5, 20.0, 0.5
    response.timing.batch_size = 1
    response.versions["camserve"] = "fake"
    if request.describe:
        info = response.model_info
        info.kind = "vae" if model == "vae" else "classifier"
        info.methods.extend(["gradcam", "saliency", "guided_backprop"])
        info.default_methods.extend(["gradcam"])
        info.layers.extend(["layer1", "layer2"])
        info.default_layers.append("layer2")
        info.labels.extend(LABELS)
        info.input_width = info.input_height = INPUT
        info.max_images, info.max_top_k, info.max_regions = 16, 5, 8
        info.max_image_bytes, info.max_pixels, info.max_response_bytes = 8 << 20, 40_000_000, 6_000_000
        return response
    if not request.images:
        response.error.code, response.error.message, response.error.field = "INVALID_ARGUMENT", "no images", "images"
        return response
    known = ("gradcam", "saliency", "guided_backprop", "area_saliency", "anomaly_recon_error")
    unknown = [m for m in request.methods if m not in known]
    if unknown:
        response.error.code = "INVALID_ARGUMENT"
        response.error.message = f"unknown method {unknown[0]!r}"
        response.error.field = f"methods[{list(request.methods).index(unknown[0])}]"
        return response
    methods = list(request.methods) or ["gradcam"]
    layers = list(request.layers) or ["layer2"]
    encoding = request.output.encoding or explain_pb2.FLOAT16
    for i, image in enumerate(request.images):
        result = response.results.add(id=image.id)
        if image.encoded == b"BAD":
            result.error.code, result.error.message = "INVALID_ARGUMENT", "cannot decode image"
            result.error.field = f"images[{i}].encoded"
            continue
        value = float(int(image.id) + 1) if image.id.isdigit() else 1.0
        h, w = image_size(image)
        side = min(h, w)
        x0, y0 = (w - side) // 2, (h - side) // 2
        g = result.geometry
        g.original_width, g.original_height = w, h
        g.crop.x0, g.crop.y0, g.crop.x1, g.crop.y1 = x0, y0, x0 + side, y0 + side
        g.input_width = g.input_height = INPUT
        target = image.target if image.HasField("target") else request.target
        if model == "vae":
            regions = list(image.regions) or list(request.regions) or [None]
            for method in methods:  # as the server: the anomaly map is one per image (target -1), not per region
                for r in [-1] if method == "anomaly_recon_error" else range(len(regions)):
                    grid = np.full((INPUT, INPUT), value + r, dtype=np.float32)
                    result.maps.add(method=method, layer="", target=r, data=tensor(grid, encoding))
            if request.output.include_reconstruction:
                rec = np.full((3, INPUT, INPUT), 0.25, dtype=np.float32)
                result.reconstruction.CopyFrom(tensor(rec))
            continue
        if target.class_ids:
            targets = list(target.class_ids)
        elif target.class_names:
            targets = [LABELS.index(n) for n in target.class_names]
        else:
            targets = list(range(target.top_k or 1))
        for rank, cls in enumerate(range(len(LABELS))):
            logit = float(len(LABELS) - rank)
            result.predictions.add(class_id=cls, label=LABELS[cls], score=0.9 / (rank + 1), logit=logit)
        del result.predictions[request.output.top_predictions or 5 :]
        for t in targets:
            for method in methods:
                if method == "gradcam":
                    for layer in layers:
                        size = INPUT if request.output.resolution == explain_pb2.INPUT else CAM
                        grid = np.full((size, size), value, dtype=np.float32)
                        grid[0, 0] = 0.0  # a minimum so normalisation is visible
                        result.maps.add(method=method, layer=layer, target=t, data=tensor(grid, encoding))
                else:
                    grad = np.full((3, INPUT, INPUT), value, dtype=np.float32)
                    grad[2] = -value
                    result.maps.add(method=method, layer="", target=t, data=tensor(grad, encoding))
    return response


def default_visualize_answer(request: explain_pb2.VisualizeRequest, model: str) -> explain_pb2.VisualizeResponse:
    """The init image made 0.1 brighter (or grey), scores rising by one per round from 1 (or the init's mean)."""
    reply = explain_pb2.VisualizeResponse(model_name=model, request_id=request.request_id, steps=request.steps or 100)
    if request.HasField("init"):
        image = np.frombuffer(request.init.data, "<f4").reshape(tuple(request.init.shape))
    else:
        image = np.full((3, INPUT, INPUT), 0.5, np.float32)
    start = float(image.mean())
    image = np.clip(image + 0.1, 0, 1).astype(np.float32)
    reply.image.CopyFrom(tensor(image, explain_pb2.FLOAT32))
    reply.scores.extend([start, float(image.mean())])
    reply.stopped, reply.elapsed_ms = "steps", 12.5
    reply.predictions.add(class_id=1, label=LABELS[1], score=0.9, logit=5.0)
    return reply


Answer = Callable[[explain_pb2.ExplainRequest, str, grpc.ServicerContext], explain_pb2.ExplainResponse]


@dataclass
class FakeServer:
    """A running fake; change its attributes to steer it (thread-safe enough for tests: read per call)."""

    address: str
    port: int
    token: str | None = None
    management_token: str | None = None
    #: Abort this many calls (any RPC) with UNAVAILABLE before answering.
    fail_unavailable: int = 0
    #: Abort every Predictions call with this code (None: answer).
    abort_code: grpc.StatusCode | None = None
    abort_message: str = "injected"
    #: Seconds to sleep in each Predictions call.
    delay: float = 0.0
    answer: Answer | None = None
    #: Answers ``input["filters"]`` calls (None: INVALID_ARGUMENT in band, as a model without convolutions would).
    filters_answer: Callable[[explain_pb2.FiltersRequest, str], explain_pb2.FiltersResponse] | None = None
    filters_requests: list[explain_pb2.FiltersRequest] = field(default_factory=list)
    #: Answers ``input["visualize"]`` calls (None: a one-step answer whose image is the init, or grey).
    visualize_answer: Callable[[explain_pb2.VisualizeRequest, str], explain_pb2.VisualizeResponse] | None = None
    visualize_requests: list[explain_pb2.VisualizeRequest] = field(default_factory=list)
    health: str = '{"status": "Healthy"}'
    #: Called at the start of every call (before auth), e.g. to change files the client reads.
    on_call: Callable[[], None] | None = None
    models: list[str] = field(default_factory=lambda: ["shapes-classifier", "vae"])
    requests: list[explain_pb2.ExplainRequest] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    #: Seconds left before each call's deadline, as the server saw it (None: the call had no deadline).
    deadlines: list[float | None] = field(default_factory=list)
    calls: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: grpc.Server | None = None

    def _enter(self, context: grpc.ServicerContext, token: str | None) -> None:
        md = {k: v for k, v in context.invocation_metadata()}
        if self.on_call is not None:
            self.on_call()
        with self.lock:
            self.calls += 1
            self.metadata.append(md)
            self.deadlines.append(context.time_remaining())
            failing = self.fail_unavailable > 0
            if failing:
                self.fail_unavailable -= 1
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "worker restarting")
        if token is not None and md.get("authorization") != f"Bearer {token}":
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "Token Authorization failed. Token either incorrect, expired, or not provided correctly",
            )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait()
            self.server = None


class _Inference(inference_pb2_grpc.InferenceAPIsServiceServicer):
    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake

    def Ping(self, request: object, context: grpc.ServicerContext) -> inference_pb2.TorchServeHealthResponse:
        self.fake._enter(context, self.fake.token)
        return inference_pb2.TorchServeHealthResponse(health=self.fake.health)

    def Predictions(
        self, request: inference_pb2.PredictionsRequest, context: grpc.ServicerContext
    ) -> inference_pb2.PredictionResponse:
        fake = self.fake
        fake._enter(context, fake.token)
        with fake.lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if fake.delay:
                time.sleep(fake.delay)
            if fake.abort_code is not None:
                context.abort(fake.abort_code, fake.abort_message)
            if request.model_name not in fake.models:
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"Model not found: {request.model_name}\norg.pytorch.serve.archive.model.ModelNotFoundException",
                )
            if "filters" in request.input:
                wanted = explain_pb2.FiltersRequest.FromString(request.input["filters"])
                with fake.lock:
                    fake.filters_requests.append(wanted)
                reply = explain_pb2.FiltersResponse(model_name=request.model_name, request_id=wanted.request_id)
                if fake.filters_answer is not None:
                    reply = fake.filters_answer(wanted, request.model_name)
                else:
                    reply.error.code, reply.error.message = "INVALID_ARGUMENT", "the model has no 2-D convolution"
                return inference_pb2.PredictionResponse(prediction=reply.SerializeToString())
            if "visualize" in request.input:
                asked = explain_pb2.VisualizeRequest.FromString(request.input["visualize"])
                with fake.lock:
                    fake.visualize_requests.append(asked)
                answer_v = fake.visualize_answer or default_visualize_answer
                return inference_pb2.PredictionResponse(
                    prediction=answer_v(asked, request.model_name).SerializeToString()
                )
            explain = explain_pb2.ExplainRequest.FromString(request.input["request"])
            with fake.lock:
                fake.requests.append(explain)
            answer = fake.answer or (lambda r, m, c: default_answer(r, m))
            return inference_pb2.PredictionResponse(
                prediction=answer(explain, request.model_name, context).SerializeToString()
            )
        finally:
            with fake.lock:
                fake.in_flight -= 1


class _Management(management_pb2_grpc.ManagementAPIsServiceServicer):
    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake

    def ListModels(
        self, request: management_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> management_pb2.ManagementResponse:
        self.fake._enter(context, self.fake.management_token)
        limit = request.limit or 100
        start = request.next_page_token
        page = self.fake.models[start : start + limit]
        body: dict[str, object] = {"models": [{"modelName": n, "modelUrl": f"{n}.mar"} for n in page]}
        if start + limit < len(self.fake.models):
            body["nextPageToken"] = str(start + limit)
        return management_pb2.ManagementResponse(msg=json.dumps(body, indent=2))


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers started later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_fake(port: int = 0, fake: FakeServer | None = None) -> FakeServer:
    """Starts (or restarts, reusing ``fake``'s settings) a fake server on 127.0.0.1:port."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)],
    )
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot bind 127.0.0.1:{port}")
    if fake is None:
        fake = FakeServer(address=f"127.0.0.1:{bound}", port=bound)
    inference_pb2_grpc.add_InferenceAPIsServiceServicer_to_server(_Inference(fake), server)
    management_pb2_grpc.add_ManagementAPIsServiceServicer_to_server(_Management(fake), server)
    server.start()
    fake.server = server
    return fake


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    """A fresh fake server on a loopback port, stopped after the test."""
    server = start_fake()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client_kwargs(fake: FakeServer) -> dict[str, object]:
    """Client arguments for the fake: its address as both inference and management address, fast retries."""
    return {"management_address": fake.address, "timeout": 10.0, "backoff": 0.01}


@pytest.fixture
def client(fake: FakeServer, client_kwargs: dict[str, Any]) -> Iterator[camserve.Client]:
    """A client of the fake, closed after the test."""
    with camserve.Client(fake.address, **client_kwargs) as c:
        yield c


@pytest.fixture
def png_bytes() -> bytes:
    """A small RGB PNG (40 x 30) as bytes."""
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def png_file(tmp_path: Path, png_bytes: bytes) -> Path:
    """The same PNG as a file."""
    path = tmp_path / "red.png"
    path.write_bytes(png_bytes)
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client tests never see the developer's camserve environment variables."""
    for name in ("CAMSERVE_TOKEN", "CAMSERVE_TOKEN_FILE", "CAMSERVE_MANAGEMENT_TOKEN", "CAMSERVE_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
