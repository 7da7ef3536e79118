"""Shared fixtures for the engine tests: tiny hand-set models and a model-state snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
import torchvision
from torch import Tensor, nn


class TinyGapNet(nn.Module):
    """1x1 conv (weights [1, -1]) -> ReLU -> GAP -> linear [[1, 2], [3, -1]], bias [0, 0.5].

    Small enough that every method's output can be worked out by hand (see test_exact.py), in the spirit of
    Captum's ``testing/helpers/basic_models.py``.
    """

    def __init__(self, act: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.relu = act if act is not None else nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
            self.fc.bias.copy_(torch.tensor([0.0, 0.5]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


@dataclass
class Snapshot:
    """Everything about a model that an explanation must not change."""

    training: list[bool]
    requires_grad: list[bool]
    params: list[Tensor]
    buffers: list[Tensor]
    grads: list[Tensor | None]
    hooks: list[int]

    @staticmethod
    def of(model: nn.Module) -> Snapshot:
        hook_dicts = (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_pre_hooks_with_kwargs",
            "_state_dict_hooks",
        )
        return Snapshot(
            training=[m.training for m in model.modules()],
            requires_grad=[p.requires_grad for p in model.parameters()],
            params=[p.detach().clone() for p in model.parameters()],
            buffers=[b.detach().clone() for b in model.buffers()],
            grads=[None if p.grad is None else p.grad.clone() for p in model.parameters()],
            hooks=[len(getattr(m, d, {})) for m in model.modules() for d in hook_dicts],
        )

    def assert_same(self, model: nn.Module) -> None:
        now = Snapshot.of(model)
        assert now.training == self.training
        assert now.requires_grad == self.requires_grad
        assert all(torch.equal(a, b) for a, b in zip(now.params, self.params, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(now.buffers, self.buffers, strict=True))
        assert all(g is None for g in now.grads), "a parameter got a .grad"
        assert now.hooks == self.hooks


@pytest.fixture(scope="package", autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on the shared 2-core machine a 2-thread pool stalls whenever another process holds a
    core (measured 2-3x slower and far noisier under load). Restored after the engine tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture
def images() -> Tensor:
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
