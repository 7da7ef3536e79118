"""Consistency checks: exact toy models, the transforms and their inverses, the agreement measures, bad specs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn

from handlers.engine import ConsistencySpec, Explainer, InvalidArgumentError
from handlers.engine._consistency import apply_transform, map_back, spearman, top_iou

from .conftest import Snapshot


class MirrorNet(nn.Module):
    """3x3 conv -> ReLU -> 3x3 conv -> ReLU -> GAP -> linear, stride 1 and padded, so maps are at input size.

    With ``symmetric=True`` every kernel is its own left-right mirror image, so the network (its layers, its logits
    and therefore its Grad-CAM and gradient maps) is exactly equivariant to a horizontal flip. Weights and inputs
    are small dyadic numbers, so float32 computes them without rounding and "exactly" holds bit for bit.
    """

    def __init__(self, *, symmetric: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                w = torch.randint(-4, 5, conv.weight.shape, generator=g).float() / 4
                if symmetric:
                    w = (w + w.flip(-1)) / 2
                conv.weight.copy_(w)
            self.fc.weight.copy_(torch.randint(-4, 5, self.fc.weight.shape, generator=g).float() / 4)

    def forward(self, x: Tensor) -> Tensor:
        a = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(a), 1))


def _dyadic_images(n: int = 2, size: int = 16) -> Tensor:
    return torch.randint(-8, 9, (n, 3, size, size), generator=torch.Generator().manual_seed(5)).float() / 8


def test_a_flip_equivariant_model_agrees_exactly_under_flips() -> None:
    model = MirrorNet(symmetric=True)
    before = Snapshot.of(model)
    ex = Explainer(model, layers="relu2", input_size=(16, 16))
    spec = ConsistencySpec(transforms=("hflip",))
    results = ex.explain(_dyadic_images(), methods=("gradcam", "saliency"), consistency=spec)
    before.assert_same(model)
    for r in results:
        assert [(a.key.method, a.transform) for a in r.consistency] == [("gradcam", "hflip"), ("saliency", "hflip")]
        for a in r.consistency:
            assert a.spearman == 1.0
            assert a.iou == 1.0
            assert a.coverage == 1.0
            assert a.mapped.shape == (16, 16)


def test_a_model_that_is_not_flip_equivariant_agrees_less() -> None:
    ex = Explainer(MirrorNet(symmetric=False), layers="relu2", input_size=(16, 16))
    results = ex.explain(
        _dyadic_images(), methods=("gradcam", "saliency"), consistency=ConsistencySpec(transforms=("hflip",))
    )
    for r in results:
        for a in r.consistency:
            assert a.spearman < 0.99, a
            assert a.iou < 1.0, a


def test_transformed_copies_are_explained_for_the_originals_targets(resnet18: nn.Module, images: Tensor) -> None:
    model = copy.deepcopy(resnet18)
    ex = Explainer(model)
    results = ex.explain(images, methods=("gradcam",), top_k=2, consistency=ConsistencySpec())
    for r in results:
        keys = [(a.key, a.transform) for a in r.consistency]
        assert keys == [(k, t) for k in r.maps for t in ("hflip", "shift", "rotate")]
        for a in r.consistency:
            assert a.key.target in r.targets
            assert -1.0 <= a.spearman <= 1.0
            assert 0.0 <= a.iou <= 1.0
            assert a.mapped.shape == images.shape[-2:]
        by_transform = {a.transform: a.coverage for a in r.consistency}
        assert by_transform["hflip"] == 1.0
        assert by_transform["shift"] == pytest.approx((1 - 8 / 64) ** 2)  # 0.125 of 64 px = 8 px each way
        assert 0.7 < by_transform["rotate"] < 1.0


def test_callable_targets_are_kept_for_the_copies(resnet18: nn.Module, images: Tensor) -> None:
    ex = Explainer(copy.deepcopy(resnet18))
    results = ex.explain(
        images[:1], methods=("gradcam",), targets=lambda out: out[:, 3], consistency=ConsistencySpec(("hflip",))
    )
    [a] = results[0].consistency
    assert a.key.target == -1


def test_shift_and_flip_are_undone_exactly_where_defined() -> None:
    x = torch.randn(1, 1, 12, 20, generator=torch.Generator().manual_seed(0))
    spec = ConsistencySpec(shift=0.25)
    for transform in ("hflip", "shift"):
        back, valid = map_back(apply_transform(x, transform, spec)[0, 0], transform, spec)
        assert torch.equal(back[valid], x[0, 0][valid])
    _, valid = map_back(x[0, 0], "shift", spec)
    assert int(valid.sum()) == (12 - 3) * (20 - 5)


def test_rotation_is_undone_up_to_resampling_on_a_smooth_image() -> None:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 64), indexing="ij")
    smooth = torch.exp(-((xx - 0.2) ** 2 + (yy + 0.1) ** 2) * 3)[None, None]
    spec = ConsistencySpec(angle=20.0)
    back, valid = map_back(apply_transform(smooth, "rotate", spec)[0, 0], "rotate", spec)
    assert 0.6 < float(valid.float().mean()) < 1.0
    assert float((back - smooth[0, 0])[valid].abs().max()) < 0.02
    assert spearman(back[valid], smooth[0, 0][valid]) > 0.999


def test_agreement_measures() -> None:
    a = torch.arange(100.0)
    assert spearman(a, a * 3 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert math.isnan(spearman(a, torch.zeros(100)))
    assert top_iou(a, a, 0.1) == 1.0
    assert top_iou(a, a.flip(0), 0.1) == 0.0
    assert top_iou(a, torch.cat([a[:95], a[95:].flip(0)]), 0.1) == 1.0  # order inside the top 10% is irrelevant
    relu = torch.zeros(100)
    relu[:3] = torch.tensor([3.0, 2.0, 1.0])
    assert top_iou(relu, relu, 0.1) == 1.0  # the zero floor is not part of the top region
    assert math.isnan(top_iou(torch.zeros(10), torch.zeros(10), 0.1))
    # values equal up to float rounding are ties, not an arbitrary order
    assert spearman(torch.tensor([1.0, 1.0 + 1e-7, 2.0]), torch.tensor([1.0 + 1e-7, 1.0, 2.0])) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"transforms": ()}, "consistency.transforms"),
        ({"transforms": ("hflip", "zoom")}, "consistency.transforms[1]"),
        ({"transforms": ("hflip", "hflip")}, "consistency.transforms"),
        ({"shift": 0.0}, "consistency.shift"),
        ({"shift": 0.7}, "consistency.shift"),
        ({"shift": float("nan")}, "consistency.shift"),
        ({"angle": 0.0}, "consistency.angle"),
        ({"angle": 120.0}, "consistency.angle"),
        ({"top_fraction": 1.0}, "consistency.top_fraction"),
        ({"top_fraction": 0}, "consistency.top_fraction"),
    ],
)
def test_bad_consistency_specs_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        ConsistencySpec(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_consistency_must_be_a_spec(resnet18: nn.Module, images: Tensor) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        Explainer(copy.deepcopy(resnet18)).explain(images, consistency=("hflip",))  # type: ignore[arg-type]
    assert info.value.field == "consistency"
