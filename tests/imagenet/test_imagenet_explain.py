"""The engine on EfficientNet-Lite0 and real photographs, against pytorch-grad-cam and Captum on the same input.

"Normalised" comparisons rescale both maps to [0, 1] over the whole map (min-max) and compare element-wise.

Guided backprop and ReLU6: Captum's GuidedBackprop only overrides ``nn.ReLU`` modules, and ``nn.ReLU6`` is an
``nn.Hardtanh``, so on this network Captum would return the plain gradient. The engine treats ReLU6 as a ReLU with an
upper gate: guided = ``relu(grad_out) * 1[0 < x < 6]`` (the ReLU6 gradient, then only positive values pass). The
reference is therefore Captum on a copy whose ReLU6 modules are a ``nn.ReLU`` subclass computing ReLU6 — same forward,
Captum's own hook — and a separate test shows that plain Captum on the original network indeed differs.
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import Deconvolution, GuidedBackprop, GuidedGradCam
from imagenet_helpers import SampleInput, minmax, pgc_raw_cam, relu6_as_relu_copy
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from torch import nn

from handlers.engine import Explainer, Explanation
from model_store import imagenet

TOL = 1e-4
LAYER = imagenet.DEFAULT_LAYERS[0]

# The cat's face in cat.jpg (451x300), original pixels, half-open (x0, y0, x1, y1): from the outer corner of its left
# eye (x 125) to past its right eye (x 350), from just above the eyes (y 75) to below the mouth (y 275). The model sees
# the crop (94, 19, 356, 281), so the box leaves out the forehead and the left cheek.
CAT_FACE_BOX = (125, 75, 350, 275)

GRID_OFFSET = 15.5  # input px; see test_tf_same_padding_offsets_the_head_grid_by_half_a_cell

EXPLAINED = ("gradcam", "gradcam++", "guided_backprop", "guided_gradcam", "deconvnet")


@pytest.fixture(scope="module")
def explainer(lite0: nn.Module) -> Explainer:
    return Explainer(lite0, layers=imagenet.DEFAULT_LAYERS, labels=imagenet.labels(), input_size=imagenet.INPUT_SIZE)


@pytest.fixture(scope="module")
def explained(explainer: Explainer, samples: dict[str, SampleInput]) -> dict[str, Explanation]:
    """One engine call for the four photographs (one batch), top-1 targets, the default layer."""
    batch = torch.stack([s.tensor for s in samples.values()])
    results = explainer.explain(batch, methods=EXPLAINED, top_predictions=5)
    return dict(zip(samples, results, strict=True))


def _report(name: str, engine: torch.Tensor, reference: torch.Tensor) -> float:
    diff = float((minmax(engine.cpu()) - minmax(reference.cpu())).abs().max())
    print(f"{name}: shape {tuple(engine.shape)}, max |normalised difference| {diff:.2e}")
    return diff


def test_engine_predictions_match_the_model(
    lite0: nn.Module, samples: dict[str, SampleInput], explained: dict[str, Explanation]
) -> None:
    for name, sample in samples.items():
        with torch.no_grad():
            probs = lite0(sample.tensor[None]).softmax(dim=1)[0]
        expl = explained[name]
        top = expl.predictions[0]
        print(name, ", ".join(f"{p.label} {p.score:.3f}" for p in expl.predictions[:3]))
        assert top.class_id == int(probs.argmax())
        assert top.score == pytest.approx(float(probs.max()), abs=1e-5)
        assert top.label == imagenet.labels()[top.class_id]
        assert expl.targets == (top.class_id,)
    assert explained["cat"].predictions[0].label in ("Egyptian cat", "tabby")
    assert explained["espresso"].predictions[0].label == "espresso"
    assert explained["rocket"].predictions[0].label in ("missile", "projectile")
    assert explained["astronaut"].predictions[0].score < 0.5


def test_map_shapes(explained: dict[str, Explanation]) -> None:
    expl = explained["cat"]
    assert tuple(expl.map("gradcam", LAYER).shape) == (7, 7)
    assert tuple(expl.map("gradcam++", LAYER).shape) == (7, 7)
    assert tuple(expl.map("guided_backprop").shape) == (3, 224, 224)
    assert tuple(expl.map("guided_gradcam", LAYER).shape) == (3, 224, 224)
    for key, value in expl.maps.items():
        assert torch.isfinite(value).all(), key
        assert float(value.abs().max()) > 0, key


def test_gradcam_matches_pytorch_grad_cam(
    lite0: nn.Module, samples: dict[str, SampleInput], explained: dict[str, Explanation]
) -> None:
    expl = explained["cat"]
    reference = pgc_raw_cam(GradCAM, lite0, LAYER, samples["cat"].tensor, expl.targets[0])
    assert _report("Grad-CAM vs pytorch-grad-cam", expl.map("gradcam", LAYER), reference) < TOL


def test_gradcam_plus_plus_matches_pytorch_grad_cam(
    lite0: nn.Module, samples: dict[str, SampleInput], explained: dict[str, Explanation]
) -> None:
    expl = explained["cat"]
    reference = pgc_raw_cam(GradCAMPlusPlus, lite0, LAYER, samples["cat"].tensor, expl.targets[0])
    assert _report("Grad-CAM++ vs pytorch-grad-cam", expl.map("gradcam++", LAYER), reference) < TOL


def test_guided_backprop_matches_captum_with_the_relu6_rule(
    lite0: nn.Module, samples: dict[str, SampleInput], explained: dict[str, Explanation]
) -> None:
    expl = explained["cat"]
    x = samples["cat"].tensor[None].clone().requires_grad_(True)
    reference = GuidedBackprop(relu6_as_relu_copy(lite0)).attribute(x, target=expl.targets[0])[0].detach()
    assert _report("guided backprop vs Captum (ReLU6 as ReLU)", expl.map("guided_backprop"), reference) < TOL


def test_deconvnet_matches_captum_with_the_relu6_rule(
    lite0: nn.Module, samples: dict[str, SampleInput], explained: dict[str, Explanation]
) -> None:
    expl = explained["cat"]
    x = samples["cat"].tensor[None].clone().requires_grad_(True)
    reference = Deconvolution(relu6_as_relu_copy(lite0)).attribute(x, target=expl.targets[0])[0].detach()
    assert _report("deconvnet vs Captum (ReLU6 as ReLU)", expl.map("deconvnet"), reference) < TOL


def test_plain_captum_ignores_relu6(
    lite0: nn.Module, samples: dict[str, SampleInput], explained: dict[str, Explanation]
) -> None:
    """Why the reference needs the copy: Captum leaves ReLU6 alone, so its "guided backprop" is the plain gradient."""
    expl = explained["cat"]
    x = samples["cat"].tensor[None].clone().requires_grad_(True)
    captum_plain = GuidedBackprop(lite0).attribute(x, target=expl.targets[0])[0].detach()
    x2 = samples["cat"].tensor[None].clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(lite0(x2)[0, expl.targets[0]], x2)
    assert torch.allclose(captum_plain, gradient[0], atol=1e-6)
    assert _report("plain Captum vs engine guided", expl.map("guided_backprop"), captum_plain) > 0.1


def test_guided_gradcam_matches_captum_with_the_relu6_rule(
    lite0: nn.Module, samples: dict[str, SampleInput], explained: dict[str, Explanation]
) -> None:
    expl = explained["cat"]
    ref = relu6_as_relu_copy(lite0)
    x = samples["cat"].tensor[None].clone().requires_grad_(True)
    guided_gradcam = GuidedGradCam(ref, ref.get_submodule(LAYER))
    reference = guided_gradcam.attribute(x, target=expl.targets[0], interpolate_mode="bilinear")[0].detach()
    assert _report("guided Grad-CAM vs Captum (ReLU6 as ReLU)", expl.map("guided_gradcam", LAYER), reference) < TOL


def test_gradcam_maximum_lies_on_the_cat_face(
    samples: dict[str, SampleInput], explained: dict[str, Explanation]
) -> None:
    """Argmax of the bilinearly upsampled Grad-CAM, mapped back through the crop into original-image pixels; also
    with the grid moved by the network's TF-"SAME" offset (15.5 input px right and down), which must not change the
    verdict."""
    in_h, in_w = imagenet.INPUT_SIZE
    for name in ("cat", *(n for n in samples if n != "cat")):
        up = explained[name].upsampled("gradcam", LAYER)
        v, u = divmod(int(up.argmax()), up.shape[1])
        x0, y0, x1, y1 = samples[name].geometry.crop
        points = {
            "plain": (u + 0.5, v + 0.5),
            "grid offset": (min(u + 0.5 + GRID_OFFSET, in_w), min(v + 0.5 + GRID_OFFSET, in_h)),
        }
        for how, (pu, pv) in points.items():
            x = x0 + pu * (x1 - x0) / in_w
            y = y0 + pv * (y1 - y0) / in_h
            print(f"{name}: Grad-CAM max ({how}) at input ({pu:.1f}, {pv:.1f}) -> original ({x:.1f}, {y:.1f})")
            if name == "cat":
                fx0, fy0, fx1, fy1 = CAT_FACE_BOX
                assert fx0 <= x < fx1
                assert fy0 <= y < fy1


def test_automatic_layer_is_the_head_activation(lite0: nn.Module, samples: dict[str, SampleInput]) -> None:
    """With no layer given the engine picks ``_swish``, a ReLU6 module called twice (after the stem at 112x112 and
    after the head at 7x7). The engine records a reused module at its last call, so the automatic Grad-CAM is taken
    on the head's ReLU6 output; on this GAP + linear head that is CAM: ``relu(sum_k w_ck F_k) / 49``."""
    auto = Explainer(lite0, labels=imagenet.labels(), input_size=imagenet.INPUT_SIZE)
    print("automatic layers:", auto.default_layers)
    assert auto.default_layers == ("_swish",)
    x = samples["cat"].tensor
    (expl,) = auto.explain(x[None], methods=("gradcam",))
    with torch.no_grad():
        features = lite0.extract_features(x[None])[0]  # the head's ReLU6 output, [1280, 7, 7]
    weights = lite0.get_submodule("_fc").weight[expl.targets[0]]
    cam = torch.relu(torch.einsum("k,khw->hw", weights, features))
    assert _report("automatic Grad-CAM vs CAM on the head features", expl.map("gradcam"), cam) < TOL
