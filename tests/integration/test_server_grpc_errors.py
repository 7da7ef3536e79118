"""A real TorchServe serving camserve over gRPC: tokens, unknown models, size limits, serving on after bad input,
and wire compatibility with TorchServe's own proto (the calls themselves: test_server_grpc.py).

All tests share the session's server (``camserve_server`` in tests/conftest.py). Every call carries a deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2_grpc
from google.protobuf import empty_pb2
from server_grpc_helpers import CLASSIFIER, DEADLINE, Caller, pixel_bomb, png, request, shapes, worker_pids

pytestmark = pytest.mark.integration

# ------------------------------------------------------------------------------------------ errors and auth


@pytest.mark.parametrize("token", ["", "not-the-key", "management"])
def test_bad_token_is_refused(camserve_server: Any, any_caller: Caller, served: str, token: str) -> None:
    key = camserve_server.management_token if token == "management" else token
    with pytest.raises(grpc.RpcError) as refused:
        any_caller.raw(served, {"request": request([png(shapes(1)[0])]).SerializeToString()}, token=key)
    # TorchServe 0.12 answers PERMISSION_DENIED for a missing, wrong or wrong-kind key.
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "Token Authorization failed" in (refused.value.details() or "")


def test_ping_needs_the_token_and_reports_healthy(camserve_server: Any, channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceAPIsServiceStub(channel)
    good = (("authorization", f"Bearer {camserve_server.inference_token}"),)
    assert json.loads(stub.Ping(empty_pb2.Empty(), metadata=good, timeout=30).health) == {"status": "Healthy"}
    with pytest.raises(grpc.RpcError) as refused:
        stub.Ping(empty_pb2.Empty(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_unknown_model(any_caller: Caller) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        any_caller.raw("no-such-model", {"request": b""})
    # TorchServe alone answers INTERNAL "Model not found" (DESIGN.md); the gateway gives it its right code.
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Model not found: no-such-model" in (failed.value.details() or "")


def test_max_request_size_is_the_grpc_inbound_limit(any_caller: Caller, served: str) -> None:
    """deploy/config.properties max_request_size (16 MiB) bounds a gRPC call: just under reaches the handler
    (which answers in band), just over is refused by the gateway before any worker sees it, naming the limit."""
    limit = 16 * 1024 * 1024
    overhead = 64  # PredictionsRequest framing around the payload: model name, map entry, key
    under = any_caller.raw(served, {"request": b"\0" * (limit - overhead)})
    assert explain_pb2.ExplainResponse.FromString(under.prediction).error.code == "INVALID_ARGUMENT"
    with pytest.raises(grpc.RpcError) as refused:
        any_caller.raw(served, {"request": b"\0" * (limit + 1)})
    # TorchServe alone resets the stream (grpcio reports CANCELLED, no limit named); the gateway says what and why.
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_request_size of 16,777,216 bytes" in refused.value.details()


def test_keeps_serving_after_bad_input(camserve_server: Any, caller: Caller) -> None:
    """Hostile and broken requests get answers in band; the worker process is never replaced."""
    before = worker_pids(camserve_server, CLASSIFIER)
    good = png(shapes(1, start=500)[0])
    bomb = pixel_bomb(10_000, 10_000)
    cases: list[tuple[dict[str, bytes], str]] = [
        ({"request": b"\x08\x96\x01 garbage"}, "INVALID_ARGUMENT"),
        ({"request": request([]).SerializeToString()}, "INVALID_ARGUMENT"),
        ({"request": request([good] * 17).SerializeToString()}, "RESOURCE_EXHAUSTED"),
        ({"request": request([good], methods=["telepathy"]).SerializeToString()}, "INVALID_ARGUMENT"),
        ({"request": request([good], layers=["no.such.layer"]).SerializeToString()}, "NOT_FOUND"),
        (
            {
                "request": request(
                    [good] * 16,  # 16 images x 6 classes x ~213 kB of float32 maps: ~20 MB > 15 MB
                    methods=["saliency", "guided_backprop", "deconvnet", "guided_gradcam", "gradcam"],
                    target=explain_pb2.Target(top_k=6),
                    output=explain_pb2.OutputOptions(encoding=explain_pb2.FLOAT32, resolution=explain_pb2.INPUT),
                ).SerializeToString()
            },
            "RESOURCE_EXHAUSTED",
        ),
    ]
    for inputs, code in cases:
        response = explain_pb2.ExplainResponse.FromString(caller.raw(CLASSIFIER, inputs).prediction)
        assert response.error.code == code, (code, response.error)
        assert response.error.message
    image_level = caller.explain(request([bomb, good[: len(good) // 2]]))
    assert [r.error.code for r in image_level.results] == ["RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"]
    # Still serving, by the same worker process.
    fine = caller.explain(request([good]))
    assert not fine.HasField("error") and not fine.results[0].HasField("error") and fine.results[0].maps
    assert worker_pids(camserve_server, CLASSIFIER) == before


# ---------------------------------------------------------------------------------------- wire compatibility


def test_wire_compatible_with_torchserves_own_proto(
    camserve_server: Any, any_caller: Caller, served: str, tmp_path: Path
) -> None:
    """Stubs compiled now from the inference.proto inside TorchServe's jar call our server and get our answer."""
    msg = request([png(im) for im in shapes(2, start=600)], methods=["gradcam"])
    ours = any_caller.explain(msg, served)
    (tmp_path / "request.bin").write_bytes(msg.SerializeToString())
    script = Path(__file__).with_name("torchserve_proto_call.py")
    run = subprocess.run(
        [
            sys.executable, str(script), str(tmp_path / "work"), camserve_server.address,
            camserve_server.inference_token, served, str(tmp_path / "request.bin"), str(tmp_path / "response.bin"),
        ],
        capture_output=True, text=True, timeout=DEADLINE + 60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["health"] == {"status": "Healthy"}
    assert summary["package"] == "org.pytorch.serve.grpc.inference"
    assert summary["status_type"] == "google.rpc.Status"  # TorchServe's file, not our copy
    assert summary["proto_file"].startswith(str(tmp_path)) and not summary["camserve_imported"]
    theirs = explain_pb2.ExplainResponse.FromString((tmp_path / "response.bin").read_bytes())
    assert not theirs.HasField("error"), theirs.error
    assert [r.id for r in theirs.results] == ["img-0", "img-1"]
    assert [[p.class_id for p in r.predictions] for r in theirs.results] == [
        [p.class_id for p in r.predictions] for r in ours.results
    ]
