"""HiResCAM and EigenCAM properties beyond the reference comparison (tests/engine/test_reference.py)."""

from __future__ import annotations

import torch
from torch import nn

from handlers.engine import Explainer, get_method
from handlers.engine.methods.eigencam import first_component_projection


def test_hirescam_is_the_cam_share_of_each_position_on_a_gap_linear_model(resnet18: nn.Module) -> None:
    """Through GAP + linear, d logit / dA = W[t] / (h w), so HiResCAM = ReLU(CAM) / (h w) (its faithfulness)."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    res = Explainer(resnet18).explain(x, methods=("hirescam", "cam"), layers="layer4", top_k=2)
    for r in res:
        for t in r.targets:
            cam = r.map("cam", target=t)
            torch.testing.assert_close(r.map("hirescam", target=t), torch.relu(cam) / cam.numel(), rtol=1e-4, atol=1e-7)


def test_eigencam_needs_no_backward_and_ignores_the_target(resnet18: nn.Module) -> None:
    assert get_method("eigencam").needs == frozenset({"activation"})
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    res = Explainer(resnet18).explain(x, methods=("eigencam",), layers="layer3", top_k=3)
    for r in res:
        maps = [r.map("eigencam", target=t) for t in r.targets]
        assert all(torch.equal(maps[0], m) for m in maps[1:])
        assert float(maps[0].max()) > 0


def test_first_component_projection_and_its_sign() -> None:
    """Rank-one activations ``A = u v^T`` (+ offsets) project to ``+-(u - mean u) |v|``, the largest entry positive."""
    for u in (torch.tensor([0.0, 1.0, 3.0, 2.0, 0.5, 4.0]), torch.tensor([0.0, -1.0, -3.0, -2.0, -0.5, -6.0])):
        for v in (torch.tensor([1.0, 2.0, 0.5]), torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([2.0, -0.5, 0.1])):
            act = (u[:, None] * v[None, :] + torch.tensor([5.0, -1.0, 2.0])).T.reshape(1, 3, 2, 3)
            p = first_component_projection(act).flatten()
            expected = (u - u.mean()) * v.norm()
            expected = expected * torch.sign(expected[expected.abs().argmax()])
            torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-5)
            assert float(p[p.abs().argmax()]) > 0


def test_eigencam_of_a_constant_layer_is_zero() -> None:
    assert torch.equal(first_component_projection(torch.ones(2, 4, 3, 3)), torch.zeros(2, 3, 3))
