"""Behaviour of Explainer.explain on a real network: sweeps, targets, safety, modes, cleanup, OOM, amp."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from handlers.engine import (
    CUSTOM_TARGET,
    Explainer,
    InvalidArgumentError,
    ResourceExhaustedError,
    available_methods,
)

from .conftest import Snapshot

CAMS = ("gradcam", "gradcam++", "xgradcam", "layercam")
ALL = (*CAMS, "saliency", "guided_backprop", "deconvnet", "guided_gradcam")


@pytest.fixture
def model(resnet18: nn.Module) -> Iterator[nn.Module]:
    m = copy.deepcopy(resnet18)
    yield m


def _same_maps(a: dict, b: dict, rtol: float = 1e-4, atol: float = 1e-6) -> None:  # type: ignore[type-arg]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol * (1 + float(b[k].abs().max())), msg=str(k))


def test_layer_sweep_equals_per_layer_calls(model: nn.Module, images: Tensor) -> None:
    ex = Explainer(model)
    layers = ["layer1", "layer2", "layer3", "layer4"]
    sweep = ex.explain(images, methods=(*CAMS, "guided_gradcam"), layers=layers, targets=[1, 2, 3, 4])
    for layer in layers:
        single = ex.explain(images, methods=(*CAMS, "guided_gradcam"), layers=layer, targets=[1, 2, 3, 4])
        for s, one in zip(sweep, single, strict=True):
            _same_maps({k: v for k, v in s.maps.items() if k.layer == layer}, dict(one.maps))
    assert sweep[0].map("gradcam", "layer1").shape == (16, 16)
    assert sweep[0].map("gradcam", "layer4").shape == (2, 2)


def test_top_k_equals_single_target_calls(model: nn.Module, images: Tensor) -> None:
    ex = Explainer(model)
    batched = ex.explain(images, methods=ALL, top_k=2)
    logits = model(images)
    for j in range(2):
        ids = logits.topk(2, dim=1).indices[:, j].tolist()
        single = ex.explain(images, methods=ALL, targets=ids)
        for i, (b, s) in enumerate(zip(batched, single, strict=True)):
            assert b.targets[j] == ids[i]
            _same_maps({k: v for k, v in b.maps.items() if k.target == ids[i]}, dict(s.maps))


def test_ragged_targets_and_per_image_top_k(model: nn.Module, images: Tensor) -> None:
    ex = Explainer(model)
    ragged = ex.explain(images, methods=("gradcam", "saliency"), targets=[[5], [6, 7, 8], 9, [10, 11]])
    assert [r.targets for r in ragged] == [(5,), (6, 7, 8), (9,), (10, 11)]
    assert [len(r.maps) for r in ragged] == [2, 6, 2, 4]
    single = ex.explain(images, methods=("gradcam", "saliency"), targets=[5, 7, 9, 11])
    for i, target in enumerate([5, 7, 9, 11]):
        _same_maps({k: v for k, v in ragged[i].maps.items() if k.target == target}, dict(single[i].maps))
    per_image = ex.explain(images, methods=("gradcam",), top_k=[1, 2, 3, 1])
    assert [len(r.targets) for r in per_image] == [1, 2, 3, 1]
    assert [r.targets[0] for r in per_image] == [r.predictions[0].class_id for r in per_image]


def test_callable_target_equals_class_target(model: nn.Module, images: Tensor) -> None:
    ex = Explainer(model)
    by_fn = ex.explain(images, methods=("gradcam", "saliency"), targets=lambda out: out[:, 42])
    by_id = ex.explain(images, methods=("gradcam", "saliency"), targets=42)
    for f, c in zip(by_fn, by_id, strict=True):
        assert f.targets == (CUSTOM_TARGET,)
        torch.testing.assert_close(f.map("gradcam"), c.map("gradcam"))
        torch.testing.assert_close(f.map("saliency"), c.map("saliency"))


def test_cam_identity_on_gap_linear_model(model: nn.Module, images: Tensor) -> None:
    """On GAP + linear models, d logit_c / d A = W[c] / (h*w), so CAM = h*w * (Grad-CAM before its ReLU)."""
    ex = Explainer(model, input_size=(64, 64))
    assert "cam" in ex.methods
    logits = model(images)
    targets = [[int(row.argmax()), int(row.argmin())] for row in logits]  # the lowest class has negative parts
    res = ex.explain(images, methods=("cam", "gradcam"), targets=targets)
    for r in res:
        for t in r.targets:
            cam, gradcam = r.map("cam", target=t), r.map("gradcam", target=t)
            h, w = cam.shape
            torch.testing.assert_close(torch.relu(cam) / (h * w), gradcam, rtol=1e-4, atol=1e-6)
    assert any(bool((r.map("cam", target=t) < 0).any()) for r in res for t in r.targets), "CAM is signed"


def test_cam_refused_where_not_gap_linear(model: nn.Module, images: Tensor) -> None:
    ex = Explainer(model, input_size=(64, 64))
    with pytest.raises(InvalidArgumentError, match="global average pooling"):
        ex.explain(images, methods=("cam",), layers="layer3")
    flat = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 62 * 62, 10))
    vgg = Explainer(flat, input_size=(64, 64))
    assert "cam" not in vgg.methods  # flatten + linear is not GAP + linear
    assert "gradcam" in vgg.methods


@pytest.mark.parametrize("context", ["inference_mode", "no_grad", "enable_grad"])
def test_works_under_any_grad_mode(model: nn.Module, images: Tensor, context: str) -> None:
    ex = Explainer(model)
    reference = ex.explain(images, methods=ALL, top_k=2)
    ctx = {"inference_mode": torch.inference_mode, "no_grad": torch.no_grad, "enable_grad": torch.enable_grad}
    with ctx[context]():
        x = images.clone()  # an inference tensor under inference_mode
        got = ex.explain(x, methods=ALL, top_k=2)
        assert torch.is_grad_enabled() == (context == "enable_grad")
    for g, r in zip(got, reference, strict=True):
        _same_maps(dict(g.maps), dict(r.maps))
        assert not any(m.requires_grad or m.is_inference() for m in g.maps.values())


def test_model_unchanged_after_success(model: nn.Module, images: Tensor) -> None:
    model.train()
    model.layer2.eval()  # a mixed mode must come back exactly
    for p in model.layer3.parameters():
        p.requires_grad_(False)
    before = Snapshot.of(model)
    Explainer(model, input_size=(64, 64)).explain(images, methods=(*ALL, "cam"), layers="layer4", top_k=2)
    before.assert_same(model)
    assert model.training and not model.layer2.training


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"targets": [1, 2, 3, 5000]}, InvalidArgumentError),  # raises after the forward (needs the logits)
        ({"targets": lambda out: out.sum()}, InvalidArgumentError),  # callable returns a scalar, not [B]
        ({"layers": "layer4.0.downsample"}, None),  # fine: a valid sub-layer
        ({"layers": "fc"}, InvalidArgumentError),  # [B, 1000] is not a spatial map: raises mid-call
    ],
)
def test_model_unchanged_after_a_call_that_raises(
    model: nn.Module,
    images: Tensor,
    kwargs: dict,
    error: type[Exception] | None,  # type: ignore[type-arg]
) -> None:
    model.train()
    before = Snapshot.of(model)
    ex = Explainer(model)
    if error is None:
        ex.explain(images, methods=ALL, **kwargs)
    else:
        with pytest.raises(error):
            ex.explain(images, methods=ALL, **kwargs)
    before.assert_same(model)


def test_model_unchanged_when_forward_raises(images: Tensor) -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: Tensor) -> Tensor:
            self.conv(x)
            raise RuntimeError("boom")

    model = Broken().train()
    before = Snapshot.of(model)
    with pytest.raises(RuntimeError, match="boom"):
        Explainer(model, layers="conv").explain(images, methods=ALL)
    before.assert_same(model)


def test_no_parameter_grad_even_when_trainable(model: nn.Module, images: Tensor) -> None:
    for p in model.parameters():
        p.requires_grad_(True)
    Explainer(model).explain(images, methods=ALL, top_k=2)
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_maps_are_float32_native_resolution_on_model_device(model: nn.Module, images: Tensor) -> None:
    [res, *_] = Explainer(model).explain(images, methods=ALL, layers=("layer3", "layer4"))
    assert res.input_size == (64, 64)
    for key, m in res.maps.items():
        assert m.dtype == torch.float32 and m.device == images.device
        if key.method in CAMS:
            assert m.shape == ((4, 4) if key.layer == "layer3" else (2, 2))
        else:
            assert m.shape == (3, 64, 64)
            assert key.layer == ("" if key.method != "guided_gradcam" else key.layer)
    assert res.upsampled("gradcam", "layer4").shape == (64, 64)
    norm = res.normalized("gradcam", "layer3")
    assert float(norm.min()) == 0.0 and float(norm.max()) == 1.0


def test_amp_uses_autocast_and_returns_float32(model: nn.Module, images: Tensor) -> None:
    full = Explainer(model).explain(images, methods=("gradcam", "saliency"), targets=7)
    amp = Explainer(model, amp=True).explain(images, methods=("gradcam", "saliency"), targets=7)
    for a, f in zip(amp, full, strict=True):
        for key in f.maps:
            assert a.maps[key].dtype == torch.float32
            corr = torch.corrcoef(torch.stack([a.maps[key].flatten(), f.maps[key].flatten()]))[0, 1]
            assert corr > 0.9, (key, float(corr))  # bfloat16 forward: close, not equal
        assert a.maps.keys() == f.maps.keys()
    # autocast really ran: bfloat16 activations make the maps differ from the float32 ones
    assert any(not torch.equal(a.map("saliency"), f.map("saliency")) for a, f in zip(amp, full, strict=True))


class _OomAbove(nn.Module):
    """Wraps a model; its forward raises a device OOM for batches larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batches.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)  # type: ignore[no-any-return]


def test_out_of_memory_splits_the_batch(model: nn.Module) -> None:
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    reference = Explainer(model).explain(images, methods=("gradcam", "saliency"), targets=[[1], [2, 3], 4, 5, 6])
    wrapped = _OomAbove(model, limit=2)
    got = Explainer(wrapped, layers="inner.layer4").explain(
        images, methods=("gradcam", "saliency"), targets=[[1], [2, 3], 4, 5, 6]
    )
    assert wrapped.batches == [5, 2, 3, 1, 2]
    for g, r in zip(got, reference, strict=True):
        assert g.targets == r.targets
        _same_maps({k._replace(layer=k.layer.removeprefix("inner.")): v for k, v in g.maps.items()}, dict(r.maps))


def test_out_of_memory_on_one_image_is_resource_exhausted(model: nn.Module, images: Tensor) -> None:
    wrapped = _OomAbove(model, limit=0).train()
    before = Snapshot.of(wrapped)
    with pytest.raises(ResourceExhaustedError):
        Explainer(wrapped, layers="inner.layer4").explain(images, methods=("gradcam",))
    assert wrapped.batches == [4, 2, 1]
    before.assert_same(wrapped)


def test_module_called_twice_uses_last_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Conv2d(3, 3, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(3, 5)

        def forward(self, x: Tensor) -> Tensor:
            y = self.block(self.pool(self.block(x)))  # 16x16 then 8x8
            return self.fc(y.mean(dim=(2, 3)))

    torch.manual_seed(0)
    [res] = Explainer(Twice(), layers="block").explain(torch.randn(1, 3, 16, 16), methods=("gradcam", "cam"))
    assert res.map("gradcam").shape == (8, 8)
    h, w = res.map("cam").shape
    torch.testing.assert_close(torch.relu(res.map("cam")) / (h * w), res.map("gradcam"))


def test_registry_lists_all_methods() -> None:
    assert set(available_methods()) >= {*ALL, "cam"}
