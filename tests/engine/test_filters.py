"""Filters: first-layer kernels as RGB tiles, deeper kernels summarised per channel, read without changing the model."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from handlers.engine import InvalidArgumentError, NotFoundError, conv_layers, filters

from .conftest import Snapshot


def test_first_layer_kernels_are_rgb_tiles_that_give_the_weights_back(resnet18: nn.Module) -> None:
    model = copy.deepcopy(resnet18)
    before = Snapshot.of(model)
    [view] = filters(model)
    before.assert_same(model)
    w = model.conv1.weight.detach()
    assert (view.layer, view.rgb, view.in_channels, view.out_channels) == ("conv1", True, 3, 64)
    assert view.kernel_size == (7, 7) and view.channels == tuple(range(64)) and view.groups == 1
    assert view.tiles.shape == (64, 3, 7, 7)
    assert float(view.tiles.min()) >= 0.0 and float(view.tiles.max()) <= 1.0
    peak = w.reshape(64, -1).abs().amax(dim=1)
    torch.testing.assert_close((view.tiles * 2 - 1) * peak[:, None, None, None], w)  # the kernel, scaled back
    extremes = (view.tiles.reshape(64, -1) - 0.5).abs().amax(dim=1)
    torch.testing.assert_close(extremes, torch.full((64,), 0.5))  # each kernel uses its whole range
    torch.testing.assert_close(view.norms, w.reshape(64, -1).norm(dim=1))
    torch.testing.assert_close(view.connections, w.square().sum(dim=(2, 3)).sqrt())


def test_deeper_kernels_are_summarised_per_channel(resnet18: nn.Module) -> None:
    name = "layer2.0.conv1"
    [view] = filters(resnet18, [name], max_channels=10)
    w = resnet18.get_submodule(name).weight.detach()  # [128, 64, 3, 3]
    assert (view.rgb, view.in_channels, view.out_channels, view.channels) == (False, 64, 128, tuple(range(10)))
    torch.testing.assert_close(view.tiles, w[:10].square().sum(dim=1).sqrt())  # spatial profile [10, 3, 3]
    torch.testing.assert_close(view.connections, w[:10].square().sum(dim=(2, 3)).sqrt())  # [10, 64]
    torch.testing.assert_close(view.norms, w[:10].reshape(10, -1).norm(dim=1))


def test_depthwise_and_pointwise_convolutions() -> None:
    model = torchvision.models.mobilenet_v2(weights=None)
    convs = conv_layers(model)
    assert convs[0] == "features.0.0" and len(convs) == 52
    depthwise = next(n for n in convs if model.get_submodule(n).groups > 1)
    [view] = filters(model, [depthwise])
    assert view.in_channels == 1 and view.groups == view.out_channels and view.connections.shape[1] == 1
    pointwise = next(n for n in convs if model.get_submodule(n).kernel_size == (1, 1))
    [view] = filters(model, pointwise)
    assert view.tiles.shape[1:] == (1, 1)


def test_zero_kernels_are_grey() -> None:
    conv = nn.Conv2d(3, 2, 3)
    with torch.no_grad():
        conv.weight.zero_()
    [view] = filters(nn.Sequential(conv))
    assert torch.equal(view.tiles, torch.full((2, 3, 3, 3), 0.5))


@pytest.mark.parametrize(
    ("layers", "max_channels", "error", "field"),
    [
        (["fc"], None, InvalidArgumentError, "layers[0]"),
        (["conv1", "avgpool"], None, InvalidArgumentError, "layers[1]"),
        ([], None, InvalidArgumentError, "layers"),
        (["conv9"], None, NotFoundError, "layers"),
        (None, 0, InvalidArgumentError, "max_channels"),
        (None, True, InvalidArgumentError, "max_channels"),
    ],
)
def test_bad_arguments(
    resnet18: nn.Module, layers: list[str] | None, max_channels: object, error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as info:
        filters(resnet18, layers, max_channels)  # type: ignore[arg-type]
    assert info.value.field == field  # type: ignore[attr-defined]


def test_a_model_without_convolutions() -> None:
    with pytest.raises(InvalidArgumentError, match="no 2-D convolution"):
        filters(nn.Linear(3, 2))
