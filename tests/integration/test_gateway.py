"""The gateway in front of TorchServe: no client behaviour can take a model down (issue: reliability).

These tests run against their own server (shapes-classifier only, started like every camserve server, gateway
included) because they flood it, cancel calls at the moment TorchServe answers, and scale its workers to zero —
the session server must stay clean for everyone else. Each test ends with the same proof: a good request is served
by the same worker process, TorchServe's log has no ``IllegalStateException`` (the frontend bug the gateway keeps
calls away from), and Ping is Healthy. ``benchmarks/cancellation.py`` runs the same probes against TorchServe
with and without the gateway side by side (deploy/README.md has its table).
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc
from camserve_proto.org.pytorch.serve.grpc.management import management_pb2, management_pb2_grpc
from google.protobuf import empty_pb2
from PIL import Image

from deploy import gateway, serverctl
from handlers.serving import _routing

pytestmark = pytest.mark.integration

MODEL = "shapes-classifier"
MAX_MESSAGE = 64 * 1024 * 1024


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def predictions_request(model: str = MODEL) -> inference_pb2.PredictionsRequest:
    explain = explain_pb2.ExplainRequest(images=[explain_pb2.Image(encoded=_png())], methods=["gradcam"])
    return inference_pb2.PredictionsRequest(model_name=model, input={"request": explain.SerializeToString()})


class Served:
    """The module's server, its stubs and the checks every test ends with."""

    def __init__(self, server: Any) -> None:
        self.server = server
        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        self.channel = grpc.insecure_channel(server.endpoints.grpc, options=options)
        self.management_channel = grpc.insecure_channel(server.endpoints.grpc_management)
        self.stub = inference_pb2_grpc.InferenceAPIsServiceStub(self.channel)
        self.management = management_pb2_grpc.ManagementAPIsServiceStub(self.management_channel)

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.server.keys.inference}"),)

    @property
    def management_md(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.server.keys.management}"),)

    def worker_pids(self) -> list[int]:
        reply = self.management.DescribeModel(
            management_pb2.DescribeModelRequest(model_name=MODEL), metadata=self.management_md, timeout=30
        )
        return sorted(int(w["pid"]) for w in json.loads(reply.msg)[0]["workers"] if w.get("pid"))

    def good_call(self, timeout: float = 120.0) -> explain_pb2.ExplainResponse:
        reply = self.stub.Predictions(predictions_request(), metadata=self.md, timeout=timeout)
        response = explain_pb2.ExplainResponse.FromString(reply.prediction)
        assert response.results[0].predictions, response
        return response

    def frontend_errors(self) -> list[str]:
        log = self.server.log_dir / "ts_log.log"
        text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if "IllegalStateException" in line]

    def healthy(self) -> str:
        reply = self.stub.Ping(empty_pb2.Empty(), metadata=self.md, timeout=30)
        return str(json.loads(reply.health)["status"])

    def still_serving(self, pids: list[int]) -> None:
        """The proof every test ends with."""
        self.good_call()
        assert self.worker_pids() == pids, "the worker process was restarted"
        assert self.frontend_errors() == []
        assert self.healthy() == "Healthy"


@pytest.fixture(scope="module")
def served(camserve_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    camserve_server.require(MODEL)
    server = serverctl.Server.start(
        run_dir=tmp_path_factory.mktemp("gateway-server"),
        model_store=camserve_server.archive_dir,
        models=[MODEL],
        overrides=serverctl.free_port_overrides("127.0.0.1"),
        timeout=300,
    )
    try:
        assert server.gateway is not None and server.endpoints.grpc != server.torchserve_grpc
        served = Served(server)
        served.good_call()  # first call of the worker (warm-up)
        yield served
    finally:
        server.stop()


def test_the_handler_and_the_gateway_agree_on_the_deadline_key() -> None:
    assert gateway.DEADLINE_KEY == _routing.DEADLINE_KEY


def test_stream_predictions_answers_like_predictions(served: Served) -> None:
    pids = served.worker_pids()
    (streamed,) = list(served.stub.StreamPredictions(predictions_request(), metadata=served.md, timeout=60))
    unary = served.good_call()
    answer = explain_pb2.ExplainResponse.FromString(streamed.prediction)
    assert [p.label for p in answer.results[0].predictions] == [p.label for p in unary.results[0].predictions]
    served.still_serving(pids)


def test_stream_predictions2_answers_every_message_in_order(served: Served) -> None:
    pids = served.worker_pids()
    messages = []
    for sequence_id, model in (("s-1", MODEL), ("s-2", "no-such-model"), ("s-3", MODEL)):
        message = predictions_request(model)
        message.sequence_id = sequence_id
        messages.append(message)
    answers = list(served.stub.StreamPredictions2(iter(messages), metadata=served.md, timeout=60))
    assert [a.sequence_id for a in answers] == ["s-1", "s-2", "s-3"]
    assert explain_pb2.ExplainResponse.FromString(answers[0].prediction).results[0].predictions
    assert answers[1].HasField("status") and "no-such-model" in answers[1].status.message
    assert answers[1].status.code != 0
    assert explain_pb2.ExplainResponse.FromString(answers[2].prediction).results[0].predictions
    served.still_serving(pids)


def test_a_flood_of_short_deadlines_leaves_the_model_serving(served: Served) -> None:
    """The issue's reproduction: 200 calls with 1 ms deadlines, then 200 with 50 ms, then a good call."""
    pids = served.worker_pids()
    codes: Counter[str] = Counter()
    for deadline in (0.001, 0.05):
        calls = [
            served.stub.Predictions.future(predictions_request(), metadata=served.md, timeout=deadline)
            for _ in range(200)
        ]
        for call in calls:
            try:
                call.result()
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
    assert set(codes) <= {"OK", "DEADLINE_EXCEEDED"}, codes
    assert sum(codes.values()) == 400
    started = time.monotonic()
    served.still_serving(pids)
    assert time.monotonic() - started < 60


def test_calls_cancelled_as_torchserve_answers_never_reach_the_frontend(served: Served) -> None:
    """Deadlines and cancellations timed around the answer: the race that crashes TorchServe's WorkerThread."""
    pids = served.worker_pids()
    started = time.monotonic()
    served.good_call()
    latency = max(time.monotonic() - started, 0.005)
    codes: Counter[str] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + 8.0

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            call = served.stub.Predictions.future(
                predictions_request(), metadata=served.md, timeout=max(0.002, rng.gauss(latency, latency / 3))
            )
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0, 2 * latency))
                call.cancel()
            try:
                call.result()
                code = "OK"
            except grpc.FutureCancelledError:
                code = "CANCELLED"
            except grpc.RpcError as exc:
                code = exc.code().name
            with lock:
                codes[code] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a call hung"
    assert set(codes) <= {"OK", "DEADLINE_EXCEEDED", "CANCELLED"}, codes
    assert codes["DEADLINE_EXCEEDED"] + codes["CANCELLED"] > 0, codes
    served.still_serving(pids)


def test_a_request_over_max_request_size_names_the_limit(served: Served) -> None:
    limit = served.server.gateway.max_request_bytes
    big = explain_pb2.ExplainRequest(images=[explain_pb2.Image(encoded=b"\0" * (limit + 1))])
    request = inference_pb2.PredictionsRequest(model_name=MODEL, input={"request": big.SerializeToString()})
    with pytest.raises(grpc.RpcError) as caught:
        served.stub.Predictions(request, metadata=served.md, timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_request_size" in caught.value.details() and f"{limit:,}" in caught.value.details()
    served.still_serving(served.worker_pids())


def test_a_model_without_workers_is_reported_and_restored(served: Served) -> None:
    """Scaled to zero workers, the model is reported Unhealthy by Ping and restored by the watchdog."""
    # REST, because gRPC's ScaleWorker cannot say 0 (proto3 reads an unset 0 as "default": one worker).
    url = f"{served.server.endpoints.management}/models/{MODEL}?min_worker=0&max_worker=0&synchronous=true"
    auth = {"Authorization": f"Bearer {served.server.keys.management}"}
    with urllib.request.urlopen(urllib.request.Request(url, method="PUT", headers=auth), timeout=60) as reply:
        assert b"scaled to 0" in reply.read()
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        health = json.loads(served.stub.Ping(empty_pb2.Empty(), metadata=served.md, timeout=30).health)
        seen.append(health)
        if health["status"] == "Healthy" and any(h["status"] == "Unhealthy" for h in seen):
            break
        time.sleep(0.2)
    unhealthy = [h for h in seen if h["status"] == "Unhealthy"]
    assert unhealthy, f"Ping never reported the model without workers: {seen[-3:]}"
    assert MODEL in unhealthy[0]["models"], unhealthy[0]
    assert seen[-1]["status"] == "Healthy", f"not restored: {seen[-3:]}"
    assert len(served.worker_pids()) == 1
    served.good_call()
    assert "restoring" in Path(served.server.run_dir / "gateway.log").read_text(encoding="utf-8")
