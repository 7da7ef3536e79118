"""The handler's device and its GPU switches, on a machine without a GPU.

The device comes from TorchServe's ``system_properties["gpu_id"]`` and ``torch.cuda.is_available()``; both are faked
here (``torch.cuda`` monkeypatched, a mock context) to check that the handler asks for ``cuda:<gpu_id>`` and falls
back to the CPU otherwise. The model config's ``amp`` and ``channels_last`` reach the engine, and the served path's
images reach it on the host, so that the engine's one pinned, non-blocking copy is the only transfer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from serving_helpers import (
    MockContext,
    assert_maps_close,
    call,
    decoded_maps,
    grpc_row,
    loaded_classifier,
    png_bytes,
    request,
    response,
)
from test_serving_handler import config
from torch import nn
from vae_helpers import box
from vae_helpers import config as vae_config

from handlers.engine._runner import GradientRunner
from handlers.serving import VAEHandler, select_device
from handlers.serving.classifier import ClassifierHandler
from model_store.provider import zoo_model


class FakeCuda:
    """``torch.cuda`` as on a host with ``count`` GPUs (``count = 0``: CUDA unusable); records ``set_device``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.selected: list[int] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", self.selected.append)


class _MovedToCuda(Exception):
    """Stops ``initialize`` where the model would go to the GPU (there is none to go to)."""


@pytest.fixture
def model_moves(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.device]]:
    """Every device a model is moved to; a move to CUDA stops the load."""
    moves: list[torch.device] = []
    real_to = nn.Module.to

    def to(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        device = kwargs.get("device", args[0] if args and isinstance(args[0], torch.device | str) else None)
        if device is not None:
            moves.append(torch.device(device))
            if torch.device(device).type == "cuda":
                raise _MovedToCuda(str(device))
        return real_to(module, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", to)
    yield moves


@pytest.mark.parametrize(("gpu_id", "count", "expected"), [(0, 1, "cuda:0"), (1, 2, "cuda:1"), ("1", 2, "cuda:1")])
def test_a_gpu_worker_selects_its_gpu(
    monkeypatch: pytest.MonkeyPatch, gpu_id: object, count: int, expected: str
) -> None:
    cuda = FakeCuda(monkeypatch, count)
    ctx = MockContext(config())
    ctx.system_properties["gpu_id"] = gpu_id
    assert select_device(ctx.system_properties["gpu_id"]) == torch.device(expected)
    assert cuda.selected == [torch.device(expected).index]


@pytest.mark.parametrize(
    ("gpu_id", "count", "warning"),
    [
        (None, 2, None),  # TorchServe assigned no GPU (CPU-only model or host)
        (0, 0, None),  # a gpu_id, but CUDA is not usable
        (2, 2, "not a visible CUDA device"),
        ("gpu0", 1, "unusable gpu_id"),
    ],
)
def test_everything_else_runs_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, gpu_id: object, count: int, warning: str | None
) -> None:
    cuda = FakeCuda(monkeypatch, count)
    with caplog.at_level(logging.WARNING, logger="handlers.serving._health"):
        assert select_device(gpu_id) == torch.device("cpu")
    assert cuda.selected == []
    assert (warning in caplog.text) if warning else not caplog.text


def test_initialize_moves_the_model_to_the_gpu_torchserve_assigned(
    monkeypatch: pytest.MonkeyPatch, model_moves: list[torch.device]
) -> None:
    cuda = FakeCuda(monkeypatch, 2)
    h = ClassifierHandler(zoo_model)
    with pytest.raises(_MovedToCuda, match="cuda:1"):
        h.initialize(MockContext(config(), gpu_id=1))
    assert cuda.selected == [1] and model_moves[-1] == torch.device("cuda", 1) and not h.initialized


def test_initialize_without_a_usable_gpu_loads_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, model_moves: list[torch.device]
) -> None:
    FakeCuda(monkeypatch, 1)  # CUDA usable, but TorchServe's gpu_id names a GPU this worker cannot see
    h = ClassifierHandler(zoo_model)
    h.initialize(MockContext(config(), gpu_id=3))
    assert h.loaded.device == torch.device("cpu") and model_moves and all(d.type == "cpu" for d in model_moves)


# ------------------------------------------------------------------------------------------ amp and channels_last
@pytest.fixture(scope="module")
def plain() -> ClassifierHandler:
    return loaded_classifier(config(), gpu_id=None)  # torchvision:resnet18's random weights from seed 0


def test_channels_last_converts_the_model_once_and_answers_the_same(plain: ClassifierHandler) -> None:
    h = loaded_classifier(config(channels_last=True), gpu_id=None)
    convs = [m.weight for m in h.loaded.model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert h.explainer.channels_last and not h.explainer.amp and not plain.explainer.channels_last
    msg = request([png_bytes(64, 64, seed=1), png_bytes(80, 64, seed=2)], methods=["gradcam", "saliency"])
    ctx = MockContext(config())
    [got], [ref] = call(h, ctx, [grpc_row(msg)]), call(plain, ctx, [grpc_row(msg)])
    for a, b in zip(response(got).results, response(ref).results, strict=True):
        assert [p.class_id for p in a.predictions] == [p.class_id for p in b.predictions]
        assert_maps_close(decoded_maps(a), decoded_maps(b))


def test_amp_reaches_the_engine_and_still_answers(plain: ClassifierHandler) -> None:
    h = ClassifierHandler(zoo_model)
    h.handle(None, MockContext(config(amp=True)))
    assert h.explainer.amp and not plain.explainer.amp
    msg = request([png_bytes(64, 64, seed=1)], methods=["gradcam"])
    [body] = call(h, MockContext(config()), [grpc_row(msg)])
    result = response(body).results[0]
    assert not result.HasField("error") and result.maps[0].data.shape == [2, 2]


def test_the_vae_handler_takes_both_switches(vae_model_dir: Any) -> None:
    h = VAEHandler(zoo_model)
    h.handle(None, MockContext(vae_config(amp=True, channels_last=True), model_dir=str(vae_model_dir)))
    assert h.explainer.amp and h.explainer.channels_last
    msg = request([png_bytes(64, 64, seed=3)], methods=["area_saliency"], regions=[box(0, 0, 16, 16)])
    [body] = call(h, MockContext(vae_config(), model_dir=str(vae_model_dir)), [grpc_row(msg)])
    result = response(body).results[0]
    assert not result.HasField("error") and result.maps


def test_served_images_reach_the_engine_on_the_host_and_go_through_pinned_memory(
    plain: ClassifierHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the engine's device claimed to be a GPU, the batch the handler hands over is pinned and copied without
    blocking (the recorded copy leaves it where it is, so the CPU model still answers)."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(GradientRunner, "device", property(lambda self: cuda))
    calls: list[tuple[str, torch.device, bool]] = []
    real_to = torch.Tensor.to

    def pin_memory(t: torch.Tensor) -> torch.Tensor:
        calls.append(("pin_memory", t.device, False))
        return t

    def to(t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            calls.append(("to", t.device, bool(kwargs.get("non_blocking"))))
            return t
        return real_to(t, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    msg = request([png_bytes(64, 64, seed=1), png_bytes(64, 64, seed=2)], methods=["gradcam"])
    [body] = call(plain, MockContext(config()), [grpc_row(msg)])
    assert all(not r.HasField("error") for r in response(body).results)
    cpu = torch.device("cpu")
    assert calls[:2] == [("pin_memory", cpu, False), ("to", cpu, True)]  # the images: one batch, one copy
    assert all(non_blocking for name, _, non_blocking in calls if name == "to")
