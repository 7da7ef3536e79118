"""Integrated Gradients, SmoothGrad and Score-CAM against independent references on real torchvision architectures.

What is compared: for each image and target, the map min-max normalised to [0, 1] over the whole map, at native
resolution, must agree within 1e-4 (as in test_reference.py).

References: Captum 0.9 ``IntegratedGradients`` (the same baseline tensor, ``n_steps`` and ``method``; its
convergence delta for the completeness error), ``NoiseTunnel`` over ``Saliency(abs=False)``, ``GuidedBackprop`` and
``IntegratedGradients`` with the same noise draws (Captum draws them with ``torch.normal``, which the test replaces
by the engine's own draws in Captum's order: each image's copies consecutively, as ``repeat_interleave``), and
pytorch-grad-cam 1.5.7 ``ScoreCAM`` through its own activation capture and ``get_cam_image`` (+ the ReLU of
``compute_cam_per_layer``) without its cv2 resize.

Models: resnet18, vgg11, mobilenet_v3_small with weights=None and a fixed seed, eval mode, batch 2 at 64x64, two
target classes per image (its top two). Each reference sees its own deep copy of the model.

Batch composition: the engine runs its points in the same forward batches as the reference (Captum: every point of
the call in one forward; pytorch-grad-cam: one image's masked copies per forward). Other chunkings agree to float
rounding, but on vgg11 (no normalisation, zero biases) a rounding-level change can flip a ReLU whose input is within
1e-7 of zero and move a map by ~1e-3; test_attrib.py checks chunking on models without such ties.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Saliency
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import Tensor, nn

from handlers.engine import Explainer, MethodParams
from handlers.engine import minmax as normalise
from handlers.engine._passes import smoothgrad_noise
from handlers.engine.methods._paths import baseline_images

TOL = 1e-4
BATCH = 2
SIZE = 64
STEPS = 8
SAMPLES = 3
ARCHS = {"resnet18": "layer3", "vgg11": "features.10", "mobilenet_v3_small": "features.6"}


@dataclass
class Net:
    arch: str
    model: nn.Module
    layer: str
    x: Tensor
    targets: list[list[int]]

    @property
    def rows(self) -> list[list[int]]:
        return [[t[j] for t in self.targets] for j in range(2)]

    def reference(self) -> nn.Module:
        ref = copy.deepcopy(self.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref


@pytest.fixture(scope="module", params=list(ARCHS))
def net(request: pytest.FixtureRequest) -> Iterator[Net]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    arch = request.param
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if arch == "vgg11" else {}
    model = getattr(torchvision.models, arch)(weights=None, **kwargs).eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(x).topk(2, dim=1).indices.tolist()
    yield Net(arch, model, ARCHS[arch], x, targets)
    torch.set_num_threads(threads)


def _compare(net: Net, ours: list, method: str, layer: str, ref: Tensor | np.ndarray) -> None:
    """``ref`` is ``[k, B, ...]`` in the order of ``net.rows``."""
    ref_t = torch.as_tensor(np.ascontiguousarray(ref)).float()
    degenerate = total = 0
    for i, res in enumerate(ours):
        assert res.targets == tuple(net.targets[i])
        for j, target in enumerate(net.targets[i]):
            mine, theirs = res.map(method, layer, target), ref_t[j, i]
            assert mine.shape == theirs.shape, (method, mine.shape, theirs.shape)
            total += 1
            degenerate += float(theirs.max() - theirs.min()) == 0
            diff = (normalise(mine) - normalise(theirs)).abs().max().item()
            assert diff < TOL, f"{net.arch} {method} image {i} target {target}: max diff {diff:.2e}"
    assert degenerate * 2 < total, f"{degenerate} of {total} reference maps are constant for {method}"


@pytest.mark.parametrize(
    ("rule", "baseline"),
    [
        ("gausslegendre", "black"),
        ("riemann_trapezoid", "blurred"),
        ("riemann_right", "noise"),
        ("riemann_middle", "black"),
    ],
)
def test_integrated_gradients_match_captum(net: Net, rule: str, baseline: str) -> None:
    params = MethodParams(steps=STEPS, rule=rule, baseline=baseline, seed=5, pass_batch=4096)  # type: ignore[arg-type]
    ours = Explainer(net.model).explain(net.x, methods=["integrated_gradients"], targets=net.targets, options=params)
    base = baseline_images(net.x, baseline, torch.zeros(1, 3, 1, 1), 5)  # type: ignore[arg-type]
    ig = IntegratedGradients(net.reference())
    refs, deltas = [], []
    for row in net.rows:
        attr, delta = ig.attribute(
            net.x.clone(), baselines=base, target=row, n_steps=STEPS, method=rule, return_convergence_delta=True
        )
        refs.append(attr.detach())
        deltas.append(delta.detach())
    _compare(net, ours, "integrated_gradients", "", torch.stack(refs))
    # The completeness error is Captum's convergence delta relative to the score gap.
    ref = net.reference()
    with torch.no_grad():
        gap = ref(net.x) - ref(base)
    for i, res in enumerate(ours):
        for j, target in enumerate(net.targets[i]):
            expected = abs(float(deltas[j][i])) / abs(float(gap[i, target]))
            assert res.completeness_errors[("integrated_gradients", "", target)] == pytest.approx(
                expected, rel=1e-3, abs=1e-5
            )


def _noise(x: Tensor, params: MethodParams) -> Tensor:
    return torch.stack([smoothgrad_noise(image, params.samples, params.noise, params.seed) for image in x]).flatten(
        0, 1
    )


def test_smoothgrad_matches_noise_tunnel(net: Net) -> None:
    params = MethodParams(samples=SAMPLES, noise=0.2, seed=11, steps=4, pass_batch=4096)
    methods = ["smoothgrad_saliency", "smoothgrad_guided_backprop", "smoothgrad_integrated_gradients"]
    ours = Explainer(net.model).explain(net.x, methods=methods, targets=net.targets, options=params)
    noise = _noise(net.x, params)
    ref = net.reference()
    algos = {
        "smoothgrad_saliency": (Saliency(ref), {"abs": False}),
        "smoothgrad_guided_backprop": (GuidedBackprop(ref), {}),
        "smoothgrad_integrated_gradients": (
            IntegratedGradients(ref),
            {"baselines": torch.zeros_like(net.x), "n_steps": 4, "method": "gausslegendre"},
        ),
    }
    for method, (algo, kwargs) in algos.items():
        tunnel = NoiseTunnel(algo)
        rows = []
        for row in net.rows:
            with mock.patch("torch.normal", return_value=noise.clone()):
                rows.append(
                    tunnel.attribute(
                        net.x.clone(), nt_type="smoothgrad", nt_samples=SAMPLES, stdevs=0.2, target=row, **kwargs
                    ).detach()
                )
        _compare(net, ours, method, "", torch.stack(rows))


def test_scorecam_matches_pytorch_grad_cam(net: Net) -> None:
    ref = net.reference()
    layer = dict(ref.named_modules())[net.layer]
    cam = ScoreCAM(model=ref, target_layers=[layer])
    try:
        cam.activations_and_grads(net.x.clone())
        [activations] = cam.activations_and_grads.activations
        channels = int(activations.shape[1])
        cam.batch_size = channels  # one image's masked copies per forward, as the engine's chunks below
        ours = Explainer(net.model).explain(
            net.x,
            methods=["scorecam"],
            layers=[net.layer],
            targets=net.targets,
            options=MethodParams(pass_batch=channels),
        )
        maps = []
        with mock.patch("tqdm.tqdm", side_effect=lambda it, *a, **k: it):
            for row in net.rows:
                targets = [ClassifierOutputTarget(c) for c in row]
                maps.append(np.maximum(cam.get_cam_image(net.x, layer, targets, activations.numpy(), None, False), 0))
    finally:
        cam.activations_and_grads.release()
    _compare(net, ours, "scorecam", net.layer, np.stack(maps))
