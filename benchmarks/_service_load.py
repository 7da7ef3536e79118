"""The service benchmark's load: the requests of each contestant and the closed loops that send them.

gRPC contestants are driven by one ``grpc.aio`` channel with ``concurrency`` coroutines, each sending its next
request when the previous one is answered (pre-serialised request bytes, raw answers; answers are parsed after
the level, so parsing costs the server nothing). TorchServe's REST ``/explanations`` runs ``concurrency`` threads,
each with its own keep-alive HTTP connection. Both stop after ``requests`` or ``seconds``, whichever comes first.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import grpc.aio
import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2
from PIL import Image

__all__ = ["Outcome", "camserve_request", "grpc_loop", "plain_request", "rest_loop", "test_image", "vae_request"]

PREDICTIONS = "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"
TIMEOUT_S = 300.0


@dataclass
class Outcome:
    """One level's raw measurements: latencies, the answers' payloads and the failures."""

    latencies_ms: list[float]
    payloads: list[bytes]
    seconds: float
    errors: Counter[str]


def test_image(size: int) -> bytes:
    """A ``size``-square photograph-like PNG (the demo image for 64, a sample photo's crop for larger sides)."""
    if size <= 64:
        from model_store import data

        pixels = data.render(7, size).image
    else:
        from pathlib import Path

        sample = Path(__file__).resolve().parents[1] / "model_store" / "samples" / "cat.jpg"
        with Image.open(sample) as img:
            pixels = np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def plain_request(model: str, image: bytes) -> bytes:
    """TorchServe's own ``Predictions`` call: the raw image as ``input['data']``."""
    return bytes(inference_pb2.PredictionsRequest(model_name=model, input={"data": image}).SerializeToString())


def camserve_request(model: str, image: bytes, methods: Sequence[str]) -> bytes:
    """camserve's ``Predictions`` call: an ``ExplainRequest`` (default output: native-resolution FLOAT16 maps)."""
    request = explain_pb2.ExplainRequest(images=[explain_pb2.Image(encoded=image)], methods=list(methods))
    return bytes(
        inference_pb2.PredictionsRequest(
            model_name=model, input={"request": request.SerializeToString()}
        ).SerializeToString()
    )


def vae_request(model: str, image: bytes, size: int, regions: int) -> bytes:
    """A VAE call with ``regions`` boxes on a 4x4 grid (each a quarter of the image's side), default methods."""
    side = size // 4
    boxes = [
        explain_pb2.Region(box=explain_pb2.Box(x0=c * side, y0=r * side, x1=(c + 1) * side, y1=(r + 1) * side))
        for r in range(4)
        for c in range(4)
    ][:regions]
    request = explain_pb2.ExplainRequest(images=[explain_pb2.Image(encoded=image, regions=boxes)])
    return bytes(
        inference_pb2.PredictionsRequest(
            model_name=model, input={"request": request.SerializeToString()}
        ).SerializeToString()
    )


async def _grpc_loop(
    target: str, payload: bytes, metadata: tuple[tuple[str, str], ...], concurrency: int, requests: int,
    seconds: float,
) -> Outcome:  # fmt: skip
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(PREDICTIONS)
        latencies: list[float] = []
        answers: list[bytes] = []
        errors: Counter[str] = Counter()
        sent = 0
        started = time.perf_counter()
        stop_at = started + seconds

        async def worker() -> None:
            nonlocal sent
            while sent < requests and time.perf_counter() < stop_at:
                sent += 1
                t0 = time.perf_counter()
                try:
                    answer = await call(payload, metadata=metadata, timeout=TIMEOUT_S)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1000.0)
                answers.append(bytes(answer))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    payloads = [inference_pb2.PredictionResponse.FromString(a).prediction for a in answers]
    return Outcome(latencies, payloads, elapsed, errors)


def grpc_loop(
    target: str, payload: bytes, metadata: tuple[tuple[str, str], ...], *, concurrency: int, requests: int,
    seconds: float,
) -> Outcome:  # fmt: skip
    """``requests`` Predictions calls (at most ``seconds``), ``concurrency`` in flight, on one channel."""
    return asyncio.run(_grpc_loop(target, payload, metadata, concurrency, requests, seconds))


def rest_loop(
    url: str, body: bytes, headers: dict[str, str], *, concurrency: int, requests: int, seconds: float
) -> Outcome:
    """POSTs ``body`` to ``url`` like :func:`grpc_loop` (threads, one keep-alive connection each)."""
    parts = urllib.parse.urlsplit(url)
    lock = threading.Lock()
    outcome = Outcome([], [], 0.0, Counter())
    sent = 0
    started = time.perf_counter()
    stop_at = started + seconds

    def worker() -> None:
        nonlocal sent
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=TIMEOUT_S)
        try:
            while True:
                with lock:
                    if sent >= requests or time.perf_counter() >= stop_at:
                        return
                    sent += 1
                t0 = time.perf_counter()
                conn.request("POST", parts.path, body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                with lock:
                    if response.status == 200:
                        outcome.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
                        outcome.payloads.append(answer)
                    else:
                        outcome.errors[f"HTTP {response.status}"] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcome.seconds = time.perf_counter() - started
    return outcome
