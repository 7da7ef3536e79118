"""Device faults on the served path: CUDA out-of-memory and sticky CUDA errors, injected on a CPU.

The handlers are loaded as TorchServe loads them (the committed shapes models, their archive configs, the mock
context of tests/handlers/serving_helpers.py) and called with whole batches through ``handle``:

- Out of memory: the engine splits the batch and retries *outside* the ``except`` block (the failed attempt's
  frames and tensors are released first), every request of the batch is answered as if memory had sufficed; when
  a single image still does not fit, that image gets RESOURCE_EXHAUSTED in band (HTTP 413 over REST) and the
  handler keeps serving. The engine's own splitting is tested in tests/engine (test_explainer.py, test_vae.py).
- A sticky CUDA error (the device is unusable afterwards) ends the worker process with ``os._exit(70)``, here in
  a real child process: exit status 70, no Python cleanup, the reason in the log. TorchServe restarting a worker
  that exits is shown with a real server in test_worker_kill.py; the replaced-exit unit test of the classifier is
  tests/handlers/test_serving_handler.py::test_sticky_cuda_errors_exit_the_worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from camserve_proto.camserve.v1 import explain_pb2
from reliability_helpers import png, shapes
from serving_helpers import MockContext
from torch import nn

from handlers.serving import _health, base
from handlers.serving.classifier import ClassifierHandler
from handlers.serving.vae import VAEHandler
from model_store import archive
from model_store.provider import zoo_model

ROOT = Path(__file__).resolve().parents[2]
STICKY = "CUDA error: an illegal memory access was encountered"
IMAGES = [png(im) for im in shapes(4, start=1100)]


def load(handler_type: type[Any], name: str) -> Any:
    handler = handler_type(zoo_model)
    handler.handle(None, MockContext(archive.load_config(name), model_name=name))
    return handler


@pytest.fixture(scope="module")
def classifier() -> ClassifierHandler:
    return load(ClassifierHandler, "shapes-classifier")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def vae() -> VAEHandler:
    return load(VAEHandler, "shapes-vae")  # type: ignore[no-any-return]


def serve(handler: Any, rows: list[dict[str, Any]], headers: list[dict[str, Any] | None]) -> tuple[list[bytes], Any]:
    """One TorchServe batch through ``handle``: the answers, and the context (per-item HTTP status)."""
    ctx = MockContext(archive.load_config(f"shapes-{handler.kind}"))
    ctx.set_batch(headers)
    out = handler.handle(rows, ctx)
    assert out is not None and len(out) == len(rows)
    return list(out), ctx


def grpc_rows(methods: list[str]) -> list[dict[str, Any]]:
    """One gRPC request per image."""
    return [
        {
            "request": explain_pb2.ExplainRequest(
                images=[explain_pb2.Image(encoded=b)], methods=methods
            ).SerializeToString()
        }
        for b in IMAGES
    ]


class OutOfMemoryAbove:
    """A forward pre-hook that raises a device OOM for batches above ``limit`` and records every attempt."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.batches: list[int] = []
        self.inside_except: list[bool] = []  # whether the attempt ran while an exception was being handled

    def __call__(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        size = int(args[0].shape[0])
        self.batches.append(size)
        self.inside_except.append(sys.exc_info()[0] is not None)
        if size > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


@pytest.fixture
def oom(classifier: ClassifierHandler, request: pytest.FixtureRequest) -> Iterator[OutOfMemoryAbove]:
    hook = OutOfMemoryAbove(limit=request.param)
    handle = classifier.loaded.model.register_forward_pre_hook(hook)
    try:
        yield hook
    finally:
        handle.remove()


def responses(bodies: list[bytes]) -> list[explain_pb2.ExplainResponse]:
    return [explain_pb2.ExplainResponse.FromString(b) for b in bodies]


@pytest.mark.parametrize("oom", [1], indirect=True)
def test_out_of_memory_splits_the_batch_and_answers_every_request(
    classifier: ClassifierHandler, oom: OutOfMemoryAbove
) -> None:
    oom.limit = 10**6  # first without memory pressure: the reference answers
    reference = responses(serve(classifier, grpc_rows(["gradcam"]), [None] * 4)[0])
    oom.limit, oom.batches, oom.inside_except = 1, [], []
    got = responses(serve(classifier, grpc_rows(["gradcam"]), [None] * 4)[0])
    assert oom.batches == [4, 2, 1, 1, 2, 1, 1]  # halves, down to single images
    assert not any(oom.inside_except), "a retry ran inside the except block of the failed attempt"
    for g, r in zip(got, reference, strict=True):
        assert not g.HasField("error") and not g.results[0].HasField("error"), g
        assert [p.class_id for p in g.results[0].predictions] == [p.class_id for p in r.results[0].predictions]
        (got_map,), (ref_map,) = g.results[0].maps, r.results[0].maps
        np.testing.assert_allclose(
            np.frombuffer(got_map.data.data, "<f2"), np.frombuffer(ref_map.data.data, "<f2"), rtol=2e-3, atol=2e-3
        )


@pytest.mark.parametrize("oom", [0], indirect=True)
def test_out_of_memory_on_a_single_image_is_resource_exhausted_in_band(
    classifier: ClassifierHandler, oom: OutOfMemoryAbove
) -> None:
    rows = [*grpc_rows(["gradcam"])[:2], {"body": IMAGES[2]}]
    headers: list[dict[str, Any] | None] = [None, None, {"body": {"Content-Type": "application/octet-stream"}}]
    (first, second, rest), ctx = serve(classifier, rows, headers)
    for answer in responses([first, second]):
        error = answer.results[0].error
        assert error.code == "RESOURCE_EXHAUSTED" and "out of memory" in error.message, answer
    assert json.loads(rest)["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert ctx.request_processor[2].status[0] == 413
    oom.limit = 10**6  # memory is back: the same handler serves the next batch
    (fine,) = responses(serve(classifier, grpc_rows(["gradcam"])[:1], [None])[0])
    assert not fine.results[0].HasField("error") and fine.results[0].maps


def test_out_of_memory_while_encoding_is_resource_exhausted(
    classifier: ClassifierHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_args: Any, **_kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory (injected while encoding)")

    monkeypatch.setattr(base, "encode_response", full)
    (answer,) = responses(serve(classifier, grpc_rows(["gradcam"])[:1], [None])[0])
    assert answer.error.code == "RESOURCE_EXHAUSTED" and "out of memory" in answer.error.message


@pytest.mark.parametrize("stage", ["engine", "encode"])
def test_sticky_cuda_error_in_the_vae_handler_exits_the_worker(
    vae: VAEHandler, stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits: list[int] = []
    monkeypatch.setattr(_health.os, "_exit", exits.append)

    def poisoned(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(STICKY)

    if stage == "engine":
        monkeypatch.setattr(vae.explainer, "explain", poisoned)
    else:
        monkeypatch.setattr(base, "encode_response", poisoned)
    (answer,) = responses(serve(vae, grpc_rows(["area_saliency"])[:1], [None])[0])
    assert exits == [_health.STICKY_EXIT_STATUS]
    codes = {answer.error.code} | {r.error.code for r in answer.results}
    assert "UNAVAILABLE" in codes, answer


CHILD = """
import atexit, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
marker = Path(sys.argv[1])
atexit.register(lambda: marker.write_text("python cleanup ran"))
from serving_helpers import MockContext
from camserve_proto.camserve.v1 import explain_pb2
from handlers.serving.classifier import ClassifierHandler
from model_store import archive
from model_store.provider import zoo_model
from reliability_helpers import png, shapes
handler = ClassifierHandler(zoo_model)
handler.handle(None, MockContext(archive.load_config("shapes-classifier")))
def poisoned(*args, **kwargs):
    raise RuntimeError(sys.argv[2])
handler.explainer.explain = poisoned
ctx = MockContext(archive.load_config("shapes-classifier"))
ctx.set_batch([None])
msg = explain_pb2.ExplainRequest(images=[explain_pb2.Image(encoded=png(shapes(1)[0]))])
handler.handle([{"request": msg.SerializeToString()}], ctx)
print("the worker survived a sticky CUDA error", flush=True)
"""


def test_sticky_cuda_error_ends_the_worker_process_without_cleanup(tmp_path: Path) -> None:
    marker = tmp_path / "cleanup"
    here = Path(__file__).resolve().parent
    paths = [str(ROOT), str(ROOT / "client"), str(ROOT / "proto"), str(here), str(here.parent / "handlers")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(marker), STICKY],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == _health.STICKY_EXIT_STATUS, (run.returncode, run.stdout, run.stderr[-3000:])
    assert "survived" not in run.stdout
    assert not marker.exists(), "Python's cleanup ran: finalisers would touch the broken CUDA context"
    assert "sticky CUDA error, the worker exits so that TorchServe restarts it" in run.stderr
