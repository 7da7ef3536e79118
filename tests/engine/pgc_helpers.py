"""pytorch-grad-cam as the reference of the CAM family: its per-layer maps at native resolution, and the comparison.

Shared by ``test_reference.py`` (CNNs) and ``test_vit_reference.py`` (ViT and Swin with pytorch-grad-cam's documented
``reshape_transform``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from handlers.engine import Explanation
from handlers.engine import minmax as normalise

TOL = 1e-4

CAM_REFS = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "eigencam": EigenCAM,
}


def module(model: nn.Module, name: str) -> nn.Module:
    found: nn.Module = dict(model.named_modules())[name]
    return found


def orient_eigencam(projection: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's EigenCAM projection ``[B, h, w]`` (before its ReLU) with the engine's sign convention.

    LAPACK's sign of a singular vector is arbitrary, so the reference's sign is flipped, per image, where its entry
    of largest magnitude is negative (scikit-learn's ``svd_flip`` convention, which the engine follows).
    """
    flat = projection.reshape(len(projection), -1)
    extreme = flat[np.arange(len(flat)), np.abs(flat).argmax(axis=1)]
    oriented: np.ndarray = projection * np.where(extreme < 0, -1.0, 1.0).astype(projection.dtype)[:, None, None]
    return oriented


def pgc_maps(
    model: nn.Module,
    names: tuple[str, ...],
    x: Tensor,
    rows: list[list[int]],
    reshape_transform: Callable[[Tensor], Tensor] | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """pytorch-grad-cam's per-layer CAMs at native resolution: its own activation/gradient capture (one forward and
    backward per target row, shared by the four methods as they only differ in ``get_cam_image``), then each
    method's ``get_cam_image`` and the ReLU that ``compute_cam_per_layer`` applies before its cv2 resize. A
    ``reshape_transform`` is given to pytorch-grad-cam as its documentation shows for transformers."""
    layers = [module(model, n) for n in names]
    out: dict[tuple[str, str], list[np.ndarray]] = {}
    capture = GradCAM(model=model, target_layers=layers, reshape_transform=reshape_transform)
    cams = {}
    for method, cls in CAM_REFS.items():
        cams[method] = cls(model=model, target_layers=layers)
        cams[method].activations_and_grads.release()  # only its get_cam_image is used
    try:
        for row in rows:
            targets = [ClassifierOutputTarget(c) for c in row]
            outputs = capture.activations_and_grads(x)
            model.zero_grad()
            sum(t(o) for t, o in zip(targets, outputs, strict=True)).backward()
            for n, layer, a, g in zip(
                names,
                layers,
                capture.activations_and_grads.activations,
                capture.activations_and_grads.gradients,
                strict=True,
            ):
                for method, cam in cams.items():
                    m = cam.get_cam_image(x, layer, targets, a.numpy(), g.numpy(), False)
                    if method == "eigencam":
                        m = orient_eigencam(m)
                    out.setdefault((method, n), []).append(np.maximum(m, 0))
    finally:
        capture.activations_and_grads.release()
    return {k: np.stack(v) for k, v in out.items()}


def compare_maps(
    what: str,
    ours: Sequence[Explanation],
    targets: Sequence[Sequence[int]],
    ref: np.ndarray,
    method: str,
    layer: str,
    tol: float = TOL,
) -> None:
    """Every image's and target's map min-max normalised equals the reference's ``ref[j, i]`` within ``tol``."""
    degenerate = total = 0
    for i, res in enumerate(ours):
        assert res.targets == tuple(targets[i])
        for j, target in enumerate(targets[i]):
            mine = res.map(method, layer, target)
            theirs = torch.from_numpy(np.ascontiguousarray(ref[j, i])).float()
            assert mine.shape == theirs.shape, (method, layer, mine.shape, theirs.shape)
            assert mine.dtype == torch.float32
            total += 1
            if float(theirs.max() - theirs.min()) == 0:
                degenerate += 1
            diff = (normalise(mine) - normalise(theirs)).abs().max().item()
            assert diff < tol, f"{what} {method} {layer} image {i} target {target}: max diff {diff:.2e}"
    # A comparison of constant maps proves nothing: most maps must have structure.
    assert degenerate * 2 < total, f"{degenerate} of {total} reference maps are constant for {method} {layer}"
