"""CAM methods on transformer token layers against pytorch-grad-cam with its documented ``reshape_transform``.

The engine reads token layers without help (the grid from the model's patch size and the input, the class token
dropped; Swin's channels-last ``[B, h, w, C]`` permuted); pytorch-grad-cam is given the reshape its documentation
shows: for ViT (``vit_example.py``) ``tensor[:, 1:, :].reshape(B, h, w, C)`` then channels first, on the last
block's first norm; for Swin (``swinT_example.py``) ``tensor.reshape(B, h, w, C)`` then channels first, on the last
block's ``norm2``. That example is written for timm's ``[B, L, C]`` tokens; torchvision's Swin blocks already give
``[B, h, w, C]``, so ``C`` is read from the last dimension and the reshape itself is the identity.

Models (weights=None, fixed seed, eval mode; torchvision zero-initialises ViT's head, so it is re-drawn): two small
``VisionTransformer`` variants (different patch sizes, grids and depths) for speed, the real ``vit_b_16`` at 224 once,
and ``swin_t``. Batch 2, the two best classes of each image as targets, compared as in ``test_reference.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer

from handlers.engine import Explainer, Explanation

from .pgc_helpers import CAM_REFS, TOL, compare_maps, pgc_maps

BATCH = 2


def vit_reshape_transform(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
    """pytorch-grad-cam's documented ViT reshape (class token dropped, channels first)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape_transform(tensor: Tensor, height: int = 7, width: int = 7) -> Tensor:
    """pytorch-grad-cam's documented Swin reshape, channels read from the last dimension (see the module docstring)."""
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(-1))
    return result.transpose(2, 3).transpose(1, 2)


def _with_head(model: nn.Module) -> nn.Module:
    """torchvision zero-initialises ViT's head (all class gradients would be zero): draw it."""
    nn.init.normal_(model.get_parameter("heads.head.weight"), std=0.5)
    return model


def _vit(**kwargs: int) -> nn.Module:
    return _with_head(VisionTransformer(**kwargs))


def _vit_b_16() -> nn.Module:
    return _with_head(torchvision.models.vit_b_16(weights=None))


@dataclass
class Case:
    build: Callable[[], nn.Module]
    size: int
    layer: str
    reshape: Callable[[Tensor], Tensor]


CASES = {
    "vit_p16_64": Case(
        partial(_vit, image_size=64, patch_size=16, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128),
        64,
        "encoder.layers.encoder_layer_1.ln_1",
        partial(vit_reshape_transform, height=4, width=4),
    ),
    "vit_p8_48": Case(
        partial(_vit, image_size=48, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64),
        48,
        "encoder.layers.encoder_layer_2.ln_1",
        partial(vit_reshape_transform, height=6, width=6),
    ),
    "vit_b_16": Case(_vit_b_16, 224, "encoder.layers.encoder_layer_11.ln_1", vit_reshape_transform),
    "swin_t": Case(
        torchvision.models.swin_t, 128, "features.7.1.norm2", partial(swin_reshape_transform, height=4, width=4)
    ),
}


@dataclass
class Run:
    name: str
    ours: list[Explanation]
    targets: list[list[int]]
    refs: dict[tuple[str, str], np.ndarray]


@pytest.fixture(scope="module", params=list(CASES))
def run(request: pytest.FixtureRequest) -> Run:
    case = CASES[request.param]
    torch.manual_seed(0)
    model = case.build().eval()
    x = torch.randn(BATCH, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).topk(2, dim=1).indices.tolist()
    rows = [[t[j] for t in targets] for j in range(2)]
    explainer = Explainer(model, input_size=(case.size, case.size))
    ours = explainer.explain(x, methods=tuple(CAM_REFS), layers=case.layer, targets=targets)
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(True)
    return Run(request.param, ours, targets, pgc_maps(reference, (case.layer,), x, rows, case.reshape))


@pytest.mark.parametrize("method", list(CAM_REFS))
def test_token_layer_cams_match_pytorch_grad_cam_with_its_reshape(run: Run, method: str) -> None:
    layer = CASES[run.name].layer
    # XGrad-CAM divides each channel's sum of g * A by its sum of A; after a LayerNorm a few channels sum to almost
    # 0 over the tokens (vit_b_16's last ln_1 here: 0.010 and 0.038 against a median of 52), which magnifies float32
    # summation-order differences between two correct implementations ~5000-fold: 8.8e-4 on one CPU, < 1e-4 on
    # another. Every other method keeps the shared tolerance.
    tol = 2e-3 if method == "xgradcam" else TOL
    compare_maps(run.name, run.ours, run.targets, run.refs[(method, layer)], method, layer, tol)


def test_vit_default_layer_is_the_documented_one() -> None:
    """pytorch-grad-cam's ViT example explains the last block's first norm; so does the automatic choice."""
    case = CASES["vit_p16_64"]
    torch.manual_seed(0)
    assert Explainer(case.build(), input_size=(64, 64)).default_layers == (case.layer,)
