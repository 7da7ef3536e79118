"""Bad input raises a typed error with the field at fault; nothing silently returns zeros."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from handlers.engine import (
    Explainer,
    Explanation,
    InvalidArgumentError,
    MapKey,
    Method,
    MethodContext,
    NotFoundError,
    available_methods,
    reduce_gradient,
    register_method,
)
from handlers.engine.methods import _base

from .conftest import TinyGapNet

X = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def ex() -> Explainer:
    return Explainer(TinyGapNet(), layers="relu", input_size=(4, 4))


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.randn(1, 4, 4), r"\[B, C, H, W\]"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.int64), "floating point"),
        (torch.randn(2, 3, 4, 4), "3 channels, the model expects 1"),
        (torch.randn(0, 1, 4, 4), "empty"),
        (torch.full((1, 1, 4, 4), float("nan")), "NaN"),
        ([[1.0]], "must be a tensor"),
    ],
)
def test_bad_images(ex: Explainer, images: object, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as info:
        ex.explain(images)  # type: ignore[arg-type]
    assert info.value.field == "images" and info.value.code == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("kwargs", "match", "field"),
    [
        ({"targets": [0]}, "1 targets for 2 images", "targets"),
        ({"targets": [0, 1, 0]}, "3 targets for 2 images", "targets"),
        ({"targets": [0, 2]}, r"class ids \[2\] outside \[0, 2\)", "targets"),
        ({"targets": -1}, r"class ids \[-1\]", "targets"),
        ({"targets": [[0], []]}, r"targets\[1\] is empty", "targets"),
        ({"targets": [[0, 0], [1]]}, "repeats", "targets"),
        ({"targets": [0, "cat"]}, "int or a list of ints", "targets"),
        ({"targets": "cat"}, "must be None, an int", "targets"),
        ({"targets": [True, 0]}, "int or a list of ints", "targets"),
        ({"targets": 0, "top_k": 1}, "either targets or top_k", "targets"),
        ({"top_k": 3}, "top_k 3 exceeds the 2 classes", "top_k"),
        ({"top_k": 0}, ">= 1", "top_k"),
        ({"top_k": [1]}, "1 entries for 2 images", "top_k"),
        ({"methods": ("gradcam", "nope")}, "unknown method 'nope'; available: saliency", "methods"),
        ({"methods": "grad_cam"}, "unknown method", "methods"),
        ({"top_predictions": -1}, "top_predictions", ""),
        ({"layers": []}, "layers is empty", "layers"),
        ({"layers": "fc"}, "not a spatial map", "layers"),
    ],
)
def test_bad_arguments(ex: Explainer, kwargs: dict, match: str, field: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidArgumentError, match=match) as info:
        ex.explain(X, **kwargs)
    assert info.value.field == field


def test_callable_target_must_give_one_scalar_per_sample(ex: Explainer) -> None:
    with pytest.raises(InvalidArgumentError, match=r"one scalar per sample \[2\]"):
        ex.explain(X, targets=lambda out: out)
    with pytest.raises(InvalidArgumentError, match="does not depend"):
        ex.explain(X, targets=lambda out: torch.zeros(2))
    with pytest.raises(InvalidArgumentError, match="cam needs class targets"):
        ex.explain(X, methods=("cam",), targets=lambda out: out[:, 0])


def test_unknown_layer_and_layer_not_called() -> None:
    class Unused(TinyGapNet):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.Conv2d(1, 1, 1)

    ex = Explainer(Unused(), input_size=(4, 4))
    with pytest.raises(NotFoundError, match="did you mean"):
        ex.explain(X, layers="rleu")
    with pytest.raises(InvalidArgumentError, match="not called during the forward"):
        ex.explain(X, layers="spare")


def test_layer_returning_a_tuple() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    class WithPair(TinyGapNet):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(self.pair(x)[0])

    with pytest.raises(InvalidArgumentError, match="returns tuple, not a tensor"):
        Explainer(WithPair(), layers="pair").explain(X)


def test_model_output_must_be_logits_for_class_targets() -> None:
    class Map(TinyGapNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.conv(x))

    ex = Explainer(Map(), layers="conv", input_size=(4, 4))
    with pytest.raises(InvalidArgumentError, match="use a callable"):
        ex.explain(X)
    [res, _] = ex.explain(X, targets=lambda out: out[:, 0].sum(dim=(1, 2)))  # a callable works on any output
    assert res.predictions == ()
    assert res.map("gradcam").shape == (4, 4)


def test_constructor_validation() -> None:
    with pytest.raises(InvalidArgumentError, match=r"nn\.Module"):
        Explainer(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="input_size"):
        Explainer(TinyGapNet(), input_size=(0, 4))
    with pytest.raises(InvalidArgumentError, match="layers is empty"):
        Explainer(TinyGapNet(), layers=[])


def test_explanation_addressing() -> None:
    maps = {MapKey("gradcam", "a", 1): torch.ones(2, 2), MapKey("gradcam", "b", 1): torch.zeros(2, 2)}
    res = Explanation((), (1,), maps, (4, 4))
    with pytest.raises(InvalidArgumentError, match="2 maps match"):
        res.map("gradcam")
    with pytest.raises(NotFoundError, match="no map for method='saliency'"):
        res.map("saliency")
    assert res.map("gradcam", "b").sum() == 0
    assert res.upsampled("gradcam", "a").shape == (4, 4)
    assert torch.equal(res.normalized("gradcam", "b"), torch.zeros(2, 2))  # constant map -> zeros, documented


def test_reduce_gradient() -> None:
    g = torch.tensor([[[1.0, -2.0]], [[-3.0, 0.5]], [[0.0, 0.0]]])  # [3, 1, 2]
    torch.testing.assert_close(reduce_gradient(g, "abs_max"), torch.tensor([[3.0, 2.0]]))
    allp = reduce_gradient(g, "all")
    assert float(allp.min()) == 0.0 and float(allp.max()) == 1.0
    pos = reduce_gradient(g, "positive")
    torch.testing.assert_close(pos, torch.tensor([[[1.0, 0.0]], [[0.0, 0.5]], [[0.0, 0.0]]]))
    neg = reduce_gradient(g, "negative")
    torch.testing.assert_close(neg, torch.tensor([[[0.0, 2 / 3]], [[1.0, 0.0]], [[0.0, 0.0]]]))
    lum = reduce_gradient(g, "luminance")
    assert lum.shape == (1, 2) and float(lum.min()) >= 0 and float(lum.max()) <= 1
    with pytest.raises(InvalidArgumentError, match="unknown reduction"):
        reduce_gradient(g, "max")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="luminance needs 3 channels"):
        reduce_gradient(g[:2], "luminance")


def test_register_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_base._REGISTRY, "_entries", dict(_base._REGISTRY._entries))

    class Activation(Method):
        """The channel-summed activation: one file, one line to register."""

        name = "activation_sum"
        scope = "layer"
        needs = frozenset({"activation"})

        def compute(self, ctx: MethodContext, layer: str) -> torch.Tensor:
            a = ctx.activation(layer).sum(dim=1)
            return a.expand(1, *a.shape)

    register_method(Activation)
    assert "activation_sum" in available_methods()
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_method(Activation)
    ex = Explainer(TinyGapNet(), layers="relu", input_size=(4, 4))
    [res, _] = ex.explain(X, methods=("activation_sum",))
    assert res.map("activation_sum").shape == (4, 4)
