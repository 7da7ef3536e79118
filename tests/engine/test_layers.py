"""Automatic layer choice, token/channels-last grids, and layer-name errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

from handlers.engine import Explainer, GridLayout, NotFoundError, detect_layout

M = torchvision.models

# (constructor, input size, expected automatic layer, expected grid)
ARCHS: dict[str, tuple[Callable[[], nn.Module], int, str, tuple[int, int]]] = {
    "resnet18": (lambda: M.resnet18(), 64, "layer4", (2, 2)),
    "densenet121": (lambda: M.densenet121(), 64, "features", (2, 2)),
    "mobilenet_v3_small": (lambda: M.mobilenet_v3_small(), 64, "features", (2, 2)),
    "efficientnet_b0": (lambda: M.efficientnet_b0(), 64, "features", (2, 2)),
    "convnext_tiny": (lambda: M.convnext_tiny(), 64, "features", (2, 2)),
    "googlenet": (lambda: M.googlenet(init_weights=False, aux_logits=False), 64, "inception5b", (2, 2)),
    "inception_v3": (lambda: M.inception_v3(init_weights=False, aux_logits=False), 139, "Mixed_7c", (3, 3)),
    # ViT: the final encoder.ln and the last block's output feed only the class token (zero patch gradients);
    # the last block's ln_1 still reaches it through attention.
    "vit_b_16": (lambda: M.vit_b_16(image_size=64), 64, "encoder.layers.encoder_layer_11.ln_1", (4, 4)),
    # Swin keeps channels last until its final permute to [B, C, h, w].
    "swin_t": (lambda: M.swin_t(), 64, "permute", (2, 2)),
}


@pytest.mark.parametrize("arch", list(ARCHS))
def test_automatic_layer(arch: str) -> None:
    ctor, size, expected, grid = ARCHS[arch]
    torch.manual_seed(0)
    model = ctor().eval()
    if arch == "vit_b_16":
        nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    ex = Explainer(model, input_size=(size, size))
    assert ex.default_layers == (expected,)
    assert expected in ex.candidate_layers
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    res = ex.explain(x, methods=("gradcam", "layercam"), top_k=1)
    for r in res:
        assert r.map("gradcam").shape == grid
        assert torch.isfinite(r.map("layercam")).all()
    assert any(float(r.map("layercam").max()) > 0 for r in res)


def test_vit_token_grid_and_swin_channels_last_gradcam() -> None:
    """Token maps are reshaped to the patch grid (class token dropped); channels-last outputs are permuted."""
    torch.manual_seed(0)
    vit = M.vit_b_16(image_size=64).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.02)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    layer = "encoder.layers.encoder_layer_11.ln_1"
    [res] = Explainer(vit, layers=layer).explain(x, methods=("gradcam",), targets=3)
    tokens = {}
    h = dict(vit.named_modules())[layer].register_forward_hook(lambda _m, _a, o: tokens.setdefault("a", o))
    try:
        xg = x.clone().requires_grad_()
        with torch.enable_grad():
            out = vit(xg)
            a = tokens["a"]
            (g,) = torch.autograd.grad(out[0, 3], a)
    finally:
        h.remove()
    a_grid = a[0, 1:].reshape(4, 4, -1).permute(2, 0, 1)
    g_grid = g[0, 1:].reshape(4, 4, -1).permute(2, 0, 1)
    expected = torch.relu((g_grid.mean(dim=(1, 2))[:, None, None] * a_grid).sum(0)).detach()
    torch.testing.assert_close(res.map("gradcam"), expected, rtol=1e-4, atol=1e-6)

    swin = M.swin_t().eval()
    [r] = Explainer(swin, layers=("norm", "permute")).explain(x, methods=("gradcam",), targets=3)
    torch.testing.assert_close(r.map("gradcam", "norm"), r.map("gradcam", "permute"))  # same data, two layouts


def test_detect_layout() -> None:
    hw = (224, 224)
    assert detect_layout((512, 7, 7), hw) == GridLayout("nchw", 7, 7)
    assert detect_layout((7, 7, 768), hw) == GridLayout("nhwc", 7, 7)
    assert detect_layout((56, 56, 96), hw) == GridLayout("nhwc", 56, 56)
    assert detect_layout((197, 768), hw) == GridLayout("tokens", 14, 14, 1)
    assert detect_layout((196, 768), hw) == GridLayout("tokens", 14, 14, 0)
    assert detect_layout((1000,), hw) is None
    assert detect_layout((7, 10, 2048), (224, 320)) == GridLayout("nhwc", 7, 10)
    assert detect_layout((141, 64), (224, 320)) == GridLayout("tokens", 10, 14, 1)  # 1 + 10 * 14
    assert detect_layout((5, 768), hw) == GridLayout("tokens", 2, 2, 1)


def test_unknown_layer_lists_close_matches() -> None:
    model = M.resnet18()
    with pytest.raises(NotFoundError, match=r"'layer5'.*layer4") as info:
        Explainer(model, layers="layer5")
    assert info.value.code == "NOT_FOUND" and info.value.field == "layers"
    with pytest.raises(NotFoundError, match=r"layer4\.1\.conv2"):
        Explainer(model).explain(torch.randn(1, 3, 32, 32), layers=["layer4.1.conv"])
