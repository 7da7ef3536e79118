"""Helpers shared by the ImageNet tests (imported by module name, like tests/handlers/serving_helpers.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from handlers.preprocess import Geometry


@dataclass(frozen=True)
class SampleInput:
    """A bundled photograph as the model sees it: normalised input ``[3, 224, 224]`` and where it came from."""

    name: str
    tensor: torch.Tensor
    geometry: Geometry


class ReLU6AsReLU(nn.ReLU):
    """ReLU6 that Captum recognises as a ReLU (``isinstance(m, nn.ReLU)``), for reference copies only.

    Captum's guided backprop and deconvnet override the gradient of ``nn.ReLU`` modules only; ``nn.ReLU6`` derives
    from ``nn.Hardtanh`` and would keep its plain gradient. On a copy whose ReLU6 modules are this class, Captum
    applies its rule to them: guided ``relu(grad_in)`` = ``relu(grad_out) * 1[0 < x < 6]``, deconvnet
    ``relu(grad_out)`` — the same rules the engine applies to ReLU6 (``HardtanhBackward0`` with min 0).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x)


def relu6_as_relu_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose ``nn.ReLU6`` children are :class:`ReLU6AsReLU` (same forward, same reuse)."""
    ref = copy.deepcopy(model)
    for parent in list(ref.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(parent, child_name, ReLU6AsReLU())
    return ref


def pgc_raw_cam(cam_class: type, model: nn.Module, layer: str, x: torch.Tensor, target: int) -> torch.Tensor:
    """pytorch-grad-cam's map for one image at the layer's native resolution (after its ReLU, before resizing).

    The library's ``__call__`` min-max scales and resizes with OpenCV; taking the map from ``get_cam_image`` compares
    the method itself, not the resampling.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = model.get_submodule(layer)
    targets = [ClassifierOutputTarget(target)]
    with cam_class(model=model, target_layers=[module]) as cam:
        inputs = x[None].clone().requires_grad_(True)  # the model's parameters are frozen
        outputs = cam.activations_and_grads(inputs)
        model.zero_grad()
        loss = sum(t(o) for t, o in zip(targets, outputs, strict=True))
        loss.backward()
        if len(cam.activations_and_grads.activations) != 1:
            raise RuntimeError(f"layer {layer} ran more than once; pytorch-grad-cam would mix its calls")
        activations = cam.activations_and_grads.activations[0].numpy()
        gradients = cam.activations_and_grads.gradients[0].numpy()
        raw = cam.get_cam_image(inputs, module, targets, activations, gradients, eigen_smooth=False)
    return torch.from_numpy(np.maximum(raw[0], 0)).float()


def minmax(m: torch.Tensor) -> torch.Tensor:
    """Rescale to [0, 1] over the whole tensor (the "normalised" comparisons)."""
    lo, hi = m.min(), m.max()
    if float(hi - lo) <= 0:
        raise ValueError("constant map: nothing to compare")
    return (m - lo) / (hi - lo)
