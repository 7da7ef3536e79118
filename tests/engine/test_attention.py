"""Attention rollout and gradient-weighted attention on ViTs, against independent per-layer loops; their errors.

The references never use the engine's attention capture: rollout reads each block's weights from PyTorch's own
``nn.MultiheadAttention(..., need_weights=True, average_attn_weights=False)`` called on the block's recorded input,
and gradient-weighted attention differentiates a ViT forward written out in this file (checked to give the model's
logits), so both the weights and their gradients come from separate code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer

from handlers.engine import Explainer, GridLayout, InvalidArgumentError, detect_layout, minmax
from handlers.engine._attention import attention_modules, capture_attention
from handlers.engine.methods._rollout import HeadFusion, rollout

from .conftest import Snapshot

TOL = 1e-4
ATTENTION_METHODS = ("attention_rollout", "attention_rollout_max", "gradient_attention")


def _vit(**kwargs: int) -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = VisionTransformer(**kwargs, num_classes=10)
    nn.init.normal_(model.get_parameter("heads.head.weight"), std=0.5)
    return model.eval()


def _vit_b_16() -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = torchvision.models.vit_b_16(weights=None)
    nn.init.normal_(model.get_parameter("heads.head.weight"), std=0.5)
    return model.eval()


# name -> (model, input size, grid)
VITS: dict[str, tuple[Callable[[], nn.Module], int, tuple[int, int]]] = {
    "vit_p8_32": (
        partial(_vit, image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=16, mlp_dim=32),
        32,
        (4, 4),
    ),
    "vit_p16_80": (
        partial(_vit, image_size=80, patch_size=16, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64),
        80,
        (5, 5),
    ),
    "vit_b_16": (_vit_b_16, 224, (14, 14)),
}


def _torch_attention(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Each block's per-head weights from PyTorch's own MultiheadAttention, on the block's recorded input."""
    inputs: list[Tensor] = []
    mods = list(attention_modules(model).values())
    handles = [m.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for m in mods]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        return [m(y, y, y, need_weights=True, average_attn_weights=False)[1] for m, y in zip(mods, inputs, strict=True)]


def _reference_rollout(weights: list[Tensor], fusion: str, grid: tuple[int, int]) -> Tensor:
    """Abnar & Zuidema, one image at a time, one layer at a time: A = rownorm(fuse(W) + I), R = A R."""
    maps = []
    for b in range(weights[0].shape[0]):
        n = weights[0].shape[-1]
        r = torch.eye(n, dtype=torch.float64)
        for w in weights:
            heads = w[b].double()
            fused = heads.mean(dim=0) if fusion == "mean" else heads.max(dim=0).values
            a = fused + torch.eye(n, dtype=torch.float64)
            for i in range(n):
                a[i] = a[i] / a[i].sum()
            r = a @ r
        maps.append(r[0, 1:].reshape(grid))
    return torch.stack(maps).float()


def _manual_vit(vit: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """torchvision's ViT forward written out (eval mode), returning the logits and the weights it multiplies by."""
    n = x.shape[0]
    t = vit.get_submodule("conv_proj")(x).flatten(2).transpose(1, 2)
    t = torch.cat([vit.get_parameter("class_token").expand(n, -1, -1), t], dim=1)
    t = t + vit.get_parameter("encoder.pos_embedding")
    weights = []
    for block in vit.get_submodule("encoder.layers").children():
        y = block.get_submodule("ln_1")(t)
        mha = block.get_submodule("self_attention")
        assert isinstance(mha, nn.MultiheadAttention)
        e, h = y.shape[-1], mha.num_heads
        d = e // h
        q, k, v = (
            F.linear(y, mha.in_proj_weight[i * e : (i + 1) * e], mha.in_proj_bias[i * e : (i + 1) * e])
            .reshape(n, -1, h, d)
            .transpose(1, 2)
            for i in range(3)
        )
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        weights.append(att)
        t = t + mha.out_proj((att @ v).transpose(1, 2).reshape(n, -1, e))
        t = t + block.get_submodule("mlp")(block.get_submodule("ln_2")(t))
    t = vit.get_submodule("encoder.ln")(t)
    return vit.get_submodule("heads")(t[:, 0]), weights


def _reference_gradient_attention(
    vit: nn.Module, x: Tensor, targets: list[list[int]], grid: tuple[int, int]
) -> dict[tuple[int, int], Tensor]:
    """Chefer et al. 2021 per image and target: R = I; R += mean_h((dY/dA * A)^+) R per block; the class row."""
    with torch.enable_grad():
        logits, weights = _manual_vit(vit, x.clone().requires_grad_())
        assert torch.allclose(logits, vit(x), rtol=1e-5, atol=1e-4)
        out: dict[tuple[int, int], Tensor] = {}
        for b, row in enumerate(targets):
            for c in row:
                grads = torch.autograd.grad(logits[b, c], weights, retain_graph=True)
                n = weights[0].shape[-1]
                r = torch.eye(n)
                for w, g in zip(weights, grads, strict=True):
                    cam = (g[b] * w[b]).clamp(min=0).mean(dim=0)
                    r = r + cam @ r
                out[(b, c)] = r[0, 1:].reshape(grid).detach()
    return out


@pytest.mark.parametrize("arch", list(VITS))
def test_attention_methods_match_independent_loops(arch: str) -> None:
    build, size, grid = VITS[arch]
    model = build()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).topk(2, dim=1).indices.tolist()
    before = Snapshot.of(model)
    res = Explainer(model, input_size=(size, size)).explain(x, methods=ATTENTION_METHODS, targets=targets)
    before.assert_same(model)
    weights = _torch_attention(model, x)
    expected = {fusion: _reference_rollout(weights, fusion, grid) for fusion in ("mean", "max")}
    chefer = _reference_gradient_attention(model, x, targets, grid)
    for b, r in enumerate(res):
        for c in targets[b]:
            for method, fusion in (("attention_rollout", "mean"), ("attention_rollout_max", "max")):
                mine = r.map(method, "", c)
                assert mine.shape == grid
                torch.testing.assert_close(mine, expected[fusion][b], rtol=1e-4, atol=1e-6)
                assert (minmax(mine) - minmax(expected[fusion][b])).abs().max() < TOL
            mine = r.map("gradient_attention", "", c)
            assert (minmax(mine) - minmax(chefer[(b, c)])).abs().max() < TOL, (arch, b, c)
            torch.testing.assert_close(mine, chefer[(b, c)], rtol=1e-3, atol=1e-6)
            assert float(chefer[(b, c)].max() - chefer[(b, c)].min()) > 0
        assert not torch.equal(
            r.map("gradient_attention", "", targets[b][0]), r.map("gradient_attention", "", targets[b][1])
        )


def test_capture_keeps_the_logits_and_records_torchs_weights() -> None:
    model = VITS["vit_p8_32"][0]()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(x)
        with capture_attention(attention_modules(model)) as recorded:
            hooked = model(x)
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-5)
    assert list(recorded) == [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(3)]
    for mine, theirs in zip(recorded.values(), _torch_attention(model, x), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert all(not m._forward_hooks for m in model.modules())


def test_rollout_rows_sum_to_one_and_identity_attention_rolls_out_to_identity() -> None:
    g = torch.Generator().manual_seed(3)
    weights = [torch.softmax(torch.randn(2, 3, 6, 6, generator=g), dim=-1) for _ in range(4)]
    fusions: tuple[HeadFusion, ...] = ("mean", "max")
    for fusion in fusions:
        r = rollout(weights, fusion)
        torch.testing.assert_close(r.sum(dim=-1), torch.ones(2, 6))
        assert bool((r >= 0).all())
    eye = torch.eye(6).expand(2, 3, 6, 6)
    torch.testing.assert_close(rollout([eye, eye], "mean"), torch.eye(6).expand(2, 6, 6))


def test_attention_methods_need_a_vision_transformer(resnet18: nn.Module) -> None:
    ex = Explainer(resnet18)
    assert not set(ATTENTION_METHODS) & set(ex.methods)
    for method in ATTENTION_METHODS:
        with pytest.raises(InvalidArgumentError, match=r"nn\.MultiheadAttention") as info:
            ex.explain(torch.randn(1, 3, 32, 32), methods=method)
        assert info.value.field == "methods" and info.value.code == "INVALID_ARGUMENT"
    swin = Explainer(torchvision.models.swin_t(), input_size=(64, 64))  # windowed attention: not rollout's model
    assert not set(ATTENTION_METHODS) & set(swin.methods)
    assert {"hirescam", "eigencam"} <= set(swin.methods)


class _CrossAttentionNet(nn.Module):
    """Patch tokens attending to a learned memory: not self-attention, so the attention methods refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.memory = nn.Parameter(torch.randn(1, 3, 8))
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        m = self.memory.expand(len(t), -1, -1)
        out: Tensor = self.head(self.attn(t, m, m)[0].mean(dim=1))
        return out


class _TokenMixerNet(nn.Module):
    """Patch tokens mixed down to 7 tokens: a token layer whose count fits no grid of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.mix = nn.Linear(16, 7)
        self.head = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        t = self.patch(x).flatten(2)  # [B, 8, 16]
        out: Tensor = self.head(self.mix(t).mean(dim=2))
        return out


def test_bad_attention_and_token_layers_are_named() -> None:
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(InvalidArgumentError, match=r"'attn'.*not self-attention") as info:
        Explainer(_CrossAttentionNet(), input_size=(32, 32)).explain(x, methods="attention_rollout")
    assert info.value.field == "methods"
    # The mixer's output [B, 8, 7] reads as 8 tokens of 7 channels: not 16 patches (+ up to 8 leading tokens).
    net = _TokenMixerNet()
    with pytest.raises(InvalidArgumentError, match=r"'mix'.*4x4 grid of 8x8 patches") as info:
        Explainer(net, layers="patch", input_size=(32, 32)).explain(x, methods="gradcam", layers="mix")
    assert info.value.field == "layers"


def test_token_grid_follows_the_patch_size_with_register_tokens() -> None:
    """1 class + 4 register tokens + 4x4 patches: the patch size gives the grid; shape inference alone would not."""
    assert detect_layout((21, 32), (32, 32), (8, 8)) == GridLayout("tokens", 4, 4, 5)
    assert detect_layout((21, 32), (32, 32)) != GridLayout("tokens", 4, 4, 5)
    assert detect_layout((197, 768), (224, 224), (16, 16)) == GridLayout("tokens", 14, 14, 1)
    assert detect_layout((7, 8), (32, 32), (8, 8)) is None
