"""``linear_shortcuts``: eval-mode batch norms and pointwise convolutions backpropagate by their shortcut rule with
the same numbers as PyTorch's own backward. Norms get non-trivial statistics (a fresh torchvision model has mean 0,
var 1, weight 1, which would hide a wrong scale)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import pytest
import torch
import torchvision
from torch import Tensor, nn

from handlers.engine import Explainer
from handlers.engine import _linear as linear_module
from handlers.engine import _runner as runner_module
from handlers.engine._hooks import walk_graph
from handlers.engine._linear import linear_shortcuts

from .conftest import Snapshot


def _randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))  # type: ignore[operator]
            m.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.1)
            if m.weight is not None:
                m.weight.data.copy_(torch.randn(c, generator=g))
                m.bias.data.copy_(torch.randn(c, generator=g))  # type: ignore[union-attr]
    return model


def _graph_names(t: Tensor) -> set[str]:
    return {node.name() for node in walk_graph(t.grad_fn)}


_CASES = [  # id, layer, input shape, whether the shortcut applies
    ("bn1d", nn.BatchNorm1d(4), (3, 4), True),
    ("bn1d-seq", nn.BatchNorm1d(4), (3, 4, 5), True),
    ("bn2d", nn.BatchNorm2d(4), (3, 4, 5, 6), True),
    ("bn2d-no-affine", nn.BatchNorm2d(4, affine=False), (3, 4, 5, 6), True),
    ("bn3d", nn.BatchNorm3d(4), (3, 4, 2, 3, 4), True),
    ("syncbn", nn.SyncBatchNorm(4), (3, 4, 5, 6), True),
    ("conv1x1", nn.Conv2d(4, 6, 1), (3, 4, 5, 6), True),
    ("conv1x1-valid-nobias", nn.Conv2d(4, 6, 1, bias=False, padding="valid"), (3, 4, 5, 6), True),
    ("conv3x3", nn.Conv2d(4, 6, 3, padding=1), (3, 4, 5, 6), False),
    ("conv1x1-stride2", nn.Conv2d(4, 6, 1, stride=2), (3, 4, 5, 7), True),
    ("conv1x1-stride2x3-large", nn.Conv2d(4, 6, 1, stride=(2, 3)), (2, 4, 40, 50), True),
    ("conv1x1-large", nn.Conv2d(4, 6, 1), (2, 4, 16, 16), True),
    ("conv1x1-padded", nn.Conv2d(4, 6, 1, padding=1), (3, 4, 5, 6), False),
    ("conv1x1-groups", nn.Conv2d(4, 6, 1, groups=2), (3, 4, 5, 6), False),
]


@pytest.mark.parametrize(
    ("layer", "shape", "shortcut", "channels_last"),
    [pytest.param(layer, shape, ok, False, id=name) for name, layer, shape, ok in _CASES]
    + [pytest.param(layer, shape, ok, True, id=f"{name}-nhwc") for name, layer, shape, ok in _CASES if len(shape) == 4],
)
def test_same_output_and_input_gradient_as_native(
    layer: nn.Module, shape: tuple[int, ...], shortcut: bool, channels_last: bool
) -> None:
    torch.manual_seed(0)
    model = _randomise_norms(nn.Sequential(copy.deepcopy(layer), nn.ReLU(inplace=True))).eval().requires_grad_(False)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y_native = model(x)
    seed = torch.randn(y_native.shape, generator=torch.Generator().manual_seed(2))
    (g_native,) = torch.autograd.grad(y_native, x, seed)
    with linear_shortcuts(model) as hooked:
        y = model(x)
    assert hooked == 1
    assert ("_ReattachBackward" in _graph_names(y)) == shortcut
    (g,) = torch.autograd.grad(y, x, seed)
    torch.testing.assert_close(y, y_native, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g, g_native, rtol=1e-5, atol=1e-5)
    assert not model[0]._forward_hooks and not model[0]._forward_pre_hooks


def test_norms_with_batch_statistics_or_in_training_keep_their_backward() -> None:
    batch_stats = nn.BatchNorm2d(4, track_running_stats=False).eval()  # batch statistics: not affine
    training = nn.BatchNorm2d(4).train()
    x = torch.randn(3, 4, 5, 6).requires_grad_()
    with linear_shortcuts(batch_stats):
        assert "NativeBatchNormBackward0" in _graph_names(batch_stats(x))
    with linear_shortcuts(training) as covered:
        assert covered == 1
        assert "NativeBatchNormBackward0" in _graph_names(training(x))


def test_norm_with_trainable_parameters_keeps_its_backward() -> None:
    norm = _randomise_norms(nn.BatchNorm2d(4)).eval()  # eval mode, but someone wants its weight gradient
    x = torch.randn(2, 4, 3, 3).requires_grad_()
    with linear_shortcuts(norm):
        y = norm(x)
    assert "NativeBatchNormBackward0" in _graph_names(y)
    _, gw = torch.autograd.grad(y.sum(), [x, norm.weight])
    assert gw.abs().sum() > 0


def test_norm_called_twice_and_without_grad() -> None:
    norm = _randomise_norms(nn.BatchNorm2d(4)).eval().requires_grad_(False)
    x = torch.randn(2, 4, 3, 3).requires_grad_()
    seed = torch.randn(2, 4, 3, 3)
    (native,) = torch.autograd.grad(norm(norm(x) * 2), x, seed)
    with linear_shortcuts(norm):
        (fast,) = torch.autograd.grad(norm(norm(x) * 2), x, seed)
        with torch.no_grad():
            assert norm(x).grad_fn is None
        assert norm(x.detach()).grad_fn is None  # input without history: nothing to attach
    torch.testing.assert_close(fast, native, rtol=1e-6, atol=1e-6)


@contextlib.contextmanager
def _no_shortcuts(model: nn.Module) -> Iterator[int]:
    yield 0


_SHORTCUT_LAYERS = {  # layers that are themselves a shortcut norm / pointwise conv, beside ordinary blocks
    "resnet18": ["bn1", "layer1.0.bn2", "layer3", "layer4.1.bn2"],
    "mobilenet_v3_small": ["features.0.1", "features.2.block.2.0", "features.4", "features.9.block.3.1"],
}


@pytest.mark.parametrize("arch", sorted(_SHORTCUT_LAYERS))
@pytest.mark.parametrize("amp", [False, True], ids=["float32", "amp"])
def test_explainer_maps_equal_the_native_backward(
    resnet18: nn.Module, monkeypatch: pytest.MonkeyPatch, arch: str, amp: bool
) -> None:
    """Maps at shortcut layers themselves (captured and re-attached on the same module), top-2 batched targets."""
    torch.manual_seed(0)
    base = resnet18 if arch == "resnet18" else torchvision.models.mobilenet_v3_small(weights=None).eval()
    model = _randomise_norms(copy.deepcopy(base))
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    kwargs = {
        "methods": ("gradcam", "gradcam++", "saliency", "guided_backprop", "deconvnet"),
        "layers": _SHORTCUT_LAYERS[arch],
        "top_k": 2,
    }
    reattached: list[int] = []
    apply = linear_module._Reattach.apply
    monkeypatch.setattr(linear_module._Reattach, "apply", lambda *a: reattached.append(1) or apply(*a))
    fast = Explainer(model, amp=amp).explain(images, **kwargs)  # type: ignore[arg-type]
    assert len(reattached) > 10  # the shortcuts were taken
    monkeypatch.setattr(runner_module, "linear_shortcuts", _no_shortcuts)
    native = Explainer(model, amp=amp).explain(images, **kwargs)  # type: ignore[arg-type]
    for f, n in zip(fast, native, strict=True):
        assert f.targets == n.targets and f.maps.keys() == n.maps.keys()
        for key in f.maps:
            # The two backwards round differently (~5e-7 of the max in float32); Grad-CAM++'s
            # g^2 / (2 g^2 + sum(A) g^3) amplifies that at shallow layers (measured up to 4e-4), bfloat16 far more.
            rel = 2e-2 if amp else (2e-3 if key.method == "gradcam++" else 1e-5)
            tol = rel * float(n.maps[key].abs().max()) + 1e-12
            torch.testing.assert_close(f.maps[key], n.maps[key], rtol=0, atol=tol, msg=str(key))


def test_grad_mode_and_model_restored_when_a_norm_raises() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(5), nn.ReLU()).eval()  # 4 channels into a 5-channel norm
    before = Snapshot.of(model)
    with pytest.raises(RuntimeError):
        Explainer(model, layers="0", input_size=(8, 8)).explain(torch.randn(1, 3, 8, 8), methods=("saliency",))
    assert torch.is_grad_enabled()
    before.assert_same(model)
