"""Every method against an independent reference on real torchvision architectures.

What is compared: for each image and target, the map min-max normalised to [0, 1] over the whole map, at native
resolution (the layer's grid for CAM-family maps, the input for gradient maps), must agree within 1e-4.

References: Captum (Saliency(abs=False), GuidedBackprop, Deconvolution, LayerGradCam with relu_attributions=True,
GuidedGradCam with interpolate_mode="bilinear") and pytorch-grad-cam (GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM)
called through its own per-layer computation (`ActivationsAndGradients` + `get_cam_image` + its ReLU) without its
cv2 resize, which would move the comparison away from the native grid.

Models: resnet18, vgg11, densenet121, mobilenet_v3_small with weights=None and a fixed seed, eval mode, batch 4,
two target classes per image (its top two, different for different images). densenet121 applies a *functional* F.relu
after `features`; our guided backprop / deconvnet change that ReLU's rule too (graph hooks), but Captum only hooks
nn.ReLU modules, so Captum runs on a reference copy whose final ReLU is an nn.ReLU module with the same weights.
pytorch-grad-cam runs on that copy too: on the original, the in-place F.relu(features, inplace=True) overwrites the
activation it stored (its detach() shares storage) and moves its gradient hook past the ReLU, so it would compare
Grad-CAM of relu(features); the engine hands the rest of the forward a copy and explains `features` itself.
Each reference sees its own deep copy of the model, so the engine's model is only touched by the engine.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam, LayerGradCam, Saliency
from torch import Tensor, nn

from handlers.engine import Explainer, Explanation

from .pgc_helpers import CAM_REFS, compare_maps, module, pgc_maps

BATCH = 4


class _DenseNetModuleRelu(nn.Module):
    """densenet121 with its functional final relu as an nn.ReLU module, for Captum's module hooks."""

    def __init__(self, net: torchvision.models.DenseNet) -> None:
        super().__init__()
        self.features = net.features
        self.final_relu = nn.ReLU(inplace=False)
        self.classifier = net.classifier

    def forward(self, x: Tensor) -> Tensor:
        out = self.final_relu(self.features(x))
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


@dataclass
class Case:
    arch: str
    size: int
    layers: tuple[str, ...]
    reference_copy: Callable[[nn.Module], nn.Module] = copy.deepcopy


CASES = {
    "resnet18": Case("resnet18", 96, ("layer3", "layer4")),  # forward order, as pytorch-grad-cam lists them
    "vgg11": Case("vgg11", 96, ("features",)),
    "densenet121": Case("densenet121", 64, ("features",), lambda m: _DenseNetModuleRelu(copy.deepcopy(m))),
    "mobilenet_v3_small": Case("mobilenet_v3_small", 96, ("features",)),
}
METHODS = ("saliency", "guided_backprop", "deconvnet", "guided_gradcam", *CAM_REFS)


@dataclass
class Run:
    case: Case
    ours: list[Explanation]
    targets: list[list[int]]
    refs: dict[tuple[str, str], np.ndarray]  # (method, layer) -> [k, B, ...]


@pytest.fixture(scope="module", params=list(CASES))
def run(request: pytest.FixtureRequest) -> Run:
    case = CASES[request.param]
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if case.arch == "vgg11" else {}
    model = getattr(torchvision.models, case.arch)(weights=None, **kwargs).eval()
    x = torch.randn(BATCH, 3, case.size, case.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the two best classes of each image: random-init nets give all-zero CAMs for many others
        targets = model(x).topk(2, dim=1).indices.tolist()
    rows = [[t[j] for t in targets] for j in range(2)]

    ours = Explainer(model).explain(x, methods=METHODS, layers=case.layers, targets=targets)

    refs: dict[tuple[str, str], np.ndarray] = {}
    cap = case.reference_copy(model).eval()
    for p in cap.parameters():
        p.requires_grad_(False)
    for name, cls in (("saliency", Saliency), ("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)):
        algo = cls(cap)
        kw = {"abs": False} if name == "saliency" else {}
        refs[(name, "")] = np.stack([algo.attribute(x.clone(), target=row, **kw).detach().numpy() for row in rows])
    for layer in case.layers:
        lgc = LayerGradCam(cap, module(cap, layer))
        refs[("captum_gradcam", layer)] = np.stack(
            [lgc.attribute(x.clone(), target=row, relu_attributions=True)[:, 0].detach().numpy() for row in rows]
        )
        ggc = GuidedGradCam(cap, module(cap, layer))
        refs[("guided_gradcam", layer)] = np.stack(
            [ggc.attribute(x.clone(), target=row, interpolate_mode="bilinear").detach().numpy() for row in rows]
        )
    pgc_model = case.reference_copy(model).eval()  # it calls .backward(): give it its own trainable copy
    for p in pgc_model.parameters():
        p.requires_grad_(True)
    refs.update(pgc_maps(pgc_model, case.layers, x, rows))
    return Run(case, ours, targets, refs)


def _compare(run: Run, method: str, layer: str, ref_key: tuple[str, str]) -> None:
    compare_maps(run.case.arch, run.ours, run.targets, run.refs[ref_key], method, layer)


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "deconvnet"])
def test_input_gradients_match_captum(run: Run, method: str) -> None:
    _compare(run, method, "", (method, ""))


@pytest.mark.parametrize("method", list(CAM_REFS))
def test_cams_match_pytorch_grad_cam(run: Run, method: str) -> None:
    for layer in run.case.layers:
        _compare(run, method, layer, (method, layer))


def test_gradcam_matches_captum(run: Run) -> None:
    for layer in run.case.layers:
        _compare(run, "gradcam", layer, ("captum_gradcam", layer))


def test_guided_gradcam_matches_captum(run: Run) -> None:
    for layer in run.case.layers:
        _compare(run, "guided_gradcam", layer, ("guided_gradcam", layer))
