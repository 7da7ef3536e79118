"""Exact numbers on a hand-set model (TinyGapNet in conftest.py), worked out by hand.

x = [[1, -2], [3, -4]]; A = [relu(x), relu(-x)] = [[[1, 0], [3, 0]], [[0, 2], [0, 4]]]; logits = W . mean(A) + b.
d logit_c / d A_k = W[c, k] / 4 everywhere, so:
  class 0: CAM = 1*A0 + 2*A1 = [[1, 4], [3, 8]];  Grad-CAM = relu(CAM / 4)
  class 1: CAM = 3*A0 - 1*A1 = [[3, -2], [9, -4]]; Grad-CAM = relu(CAM / 4) = [[.75, 0], [2.25, 0]]
Input gradients (d/dx = gA0 - gA1 through the 1x1 conv with weights [1, -1]):
  saliency class 1: gA0 = .75 (x > 0), gA1 = -.25 (x < 0)  -> [[.75, .25], [.75, .25]]
  guided   class 1: gA1 = relu(-.25 * mask) = 0            -> [[.75, 0], [.75, 0]]
  deconv   class 1: gA0 = relu(.75) = .75, gA1 = relu(-.25) = 0 everywhere, mask ignored -> all .75
  deconv   class 0: gA0 = .25, gA1 = .5 everywhere         -> all -.25
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from handlers.engine import Explainer

from .conftest import TinyGapNet

X = torch.tensor([[[[1.0, -2.0], [3.0, -4.0]]]])


def _run(targets: list[int], **kw: object) -> dict[str, torch.Tensor]:
    model = TinyGapNet()
    ex = Explainer(model, layers="relu", input_size=(2, 2))
    methods = ("cam", "gradcam", "layercam", "saliency", "guided_backprop", "deconvnet", "guided_gradcam")
    [res] = ex.explain(X, methods=methods, targets=[targets], **kw)  # type: ignore[arg-type]
    return {f"{k.method}/{k.target}": v for k, v in res.maps.items()}


def test_cam_family_exact() -> None:
    maps = _run([0, 1])
    t = torch.tensor
    torch.testing.assert_close(maps["cam/0"], t([[1.0, 4.0], [3.0, 8.0]]))
    torch.testing.assert_close(maps["cam/1"], t([[3.0, -2.0], [9.0, -4.0]]))
    torch.testing.assert_close(maps["gradcam/0"], t([[0.25, 1.0], [0.75, 2.0]]))
    torch.testing.assert_close(maps["gradcam/1"], t([[0.75, 0.0], [2.25, 0.0]]))
    # LayerCAM class 1: relu(sum_k relu(g_k) A_k) = relu(.75 * A0 + 0 * A1)
    torch.testing.assert_close(maps["layercam/1"], t([[0.75, 0.0], [2.25, 0.0]]))


def test_input_gradients_exact() -> None:
    maps = _run([0, 1])
    t = torch.tensor
    torch.testing.assert_close(maps["saliency/0"], t([[[0.25, -0.5], [0.25, -0.5]]]))
    torch.testing.assert_close(maps["saliency/1"], t([[[0.75, 0.25], [0.75, 0.25]]]))
    torch.testing.assert_close(maps["guided_backprop/1"], t([[[0.75, 0.0], [0.75, 0.0]]]))
    torch.testing.assert_close(maps["deconvnet/1"], torch.full((1, 2, 2), 0.75))
    torch.testing.assert_close(maps["deconvnet/0"], torch.full((1, 2, 2), -0.25))
    # Same grid as the input, so no upsampling: guided Grad-CAM = guided backprop * Grad-CAM.
    torch.testing.assert_close(maps["guided_gradcam/1"], maps["guided_backprop/1"] * maps["gradcam/1"])


def test_relu6_guided_passes_only_inside_0_6() -> None:
    """ReLU6 = hardtanh(0, 6): guided passes positive gradients where 0 < x < 6; deconv ignores the mask."""
    model = TinyGapNet(act=nn.ReLU6())
    x = torch.tensor([[[[1.0, -2.0], [8.0, -4.0]]]])  # 8 saturates channel 0 (grad 0 there)
    [res] = Explainer(model, layers="relu", input_size=(2, 2)).explain(
        x, methods=("saliency", "guided_backprop", "deconvnet"), targets=1
    )
    t = torch.tensor
    torch.testing.assert_close(res.map("saliency"), t([[[0.75, 0.25], [0.0, 0.25]]]))
    torch.testing.assert_close(res.map("guided_backprop"), t([[[0.75, 0.0], [0.0, 0.0]]]))
    torch.testing.assert_close(res.map("deconvnet"), torch.full((1, 2, 2), 0.75))


@pytest.mark.parametrize("inplace", [False, True])
def test_functional_and_inplace_relu_get_the_guided_rule(inplace: bool) -> None:
    class Functional(TinyGapNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.nn.functional.relu(self.conv(x), inplace=inplace)
            return self.fc(torch.flatten(self.pool(a), 1))

    [res] = Explainer(Functional(), layers="conv", input_size=(2, 2)).explain(
        X, methods=("guided_backprop", "deconvnet"), targets=1
    )
    torch.testing.assert_close(res.map("guided_backprop"), torch.tensor([[[0.75, 0.0], [0.75, 0.0]]]))
    torch.testing.assert_close(res.map("deconvnet"), torch.full((1, 2, 2), 0.75))


def test_predictions_are_from_the_same_forward() -> None:
    model = TinyGapNet()
    labels = ["zero", "one"]
    [res] = Explainer(model, labels=labels, input_size=(2, 2)).explain(X, methods=(), top_predictions=5)
    logits = model(X)[0]
    probs = logits.softmax(0)
    assert [p.class_id for p in res.predictions] == [0, 1]  # logits [4.0, 2.0]
    assert [p.label for p in res.predictions] == labels
    for p in res.predictions:
        assert p.logit == pytest.approx(float(logits[p.class_id]))
        assert p.score == pytest.approx(float(probs[p.class_id]))
    assert res.maps == {}
    assert res.targets == (0,)
