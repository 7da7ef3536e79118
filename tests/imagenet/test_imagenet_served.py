"""The imagenet-efficientnet-lite0 archive and the served model, compared with the references on the same input.

The archive test needs no server. The others use the session's real TorchServe (``camserve_server`` in
tests/conftest.py) through the client SDK, send the sample JPEGs as files and ask for FLOAT32 maps so the comparison
with pytorch-grad-cam / Captum is not limited by float16 transport.
"""

from __future__ import annotations

import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import camserve
import numpy as np
import pytest
import torch
import yaml
from captum.attr import GuidedBackprop
from imagenet_helpers import SampleInput, minmax, pgc_raw_cam, relu6_as_relu_copy
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from torch import nn

from model_store import archive, imagenet

MODEL = "imagenet-efficientnet-lite0"
LAYER = imagenet.DEFAULT_LAYERS[0]
TOL = 1e-4
METHODS = ("gradcam", "gradcam++", "guided_backprop")


def test_archive_builds_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network in this process, and any HTTP from torch-model-archiver would hit a dead proxy."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    path = archive.build(MODEL, tmp_path)
    assert path == tmp_path / f"{MODEL}.mar"
    size = path.stat().st_size
    print(f"{path.name}: {size} bytes")
    assert size < 100_000  # the weights stay in the installed package
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        config = yaml.safe_load(zf.read("model-config.yaml"))
    assert not [n for n in names if n.endswith((".pth", ".pt", ".bin", ".safetensors"))]
    assert "MAR-INF/MANIFEST.json" in names
    cam = config["camserve"]
    assert (cam["kind"], cam["model"], cam["weights"], cam["labels"]) == (
        "classifier",
        "efficientnet-lite0",
        None,
        None,
    )
    assert tuple(cam["input_size"]) == imagenet.INPUT_SIZE
    assert cam["resize"] == imagenet.RESIZE
    assert cam["mean"] == pytest.approx(list(imagenet.MEAN), abs=1e-12)
    assert cam["std"] == pytest.approx(list(imagenet.STD), abs=1e-12)
    assert cam["default_layers"] == list(imagenet.DEFAULT_LAYERS)
    assert cam["default_methods"] == ["gradcam", "gradcam++", "guided_backprop", "guided_gradcam"]


@pytest.fixture(scope="module")
def client(camserve_server: Any) -> Iterator[camserve.Client]:
    camserve_server.require(MODEL)
    with camserve.Client(camserve_server.address, token=camserve_server.inference_token, timeout=180.0) as c:
        yield c


@pytest.fixture(scope="module")
def served(client: camserve.Client) -> dict[str, camserve.ExplainResult]:
    """One request with the four photographs as JPEG files: top-1 targets, the default layer, float32 maps."""
    paths = [str(imagenet.sample_path(name)) for name in imagenet.SAMPLES]
    results = client.explain(paths, model=MODEL, methods=list(METHODS), layers=[LAYER], encoding="float32")
    return {name: r.raise_for_error() for name, r in zip(imagenet.SAMPLES, results, strict=True)}


def _report(name: str, served_map: camserve.Map, reference: torch.Tensor) -> float:
    got = torch.from_numpy(np.array(served_map.array))
    diff = float((minmax(got) - minmax(reference.cpu())).abs().max())
    print(f"served {name}: shape {tuple(got.shape)}, max |normalised difference| {diff:.2e}")
    return diff


@pytest.mark.integration
def test_served_predictions_and_geometry(
    lite0: nn.Module, samples: dict[str, SampleInput], served: dict[str, camserve.ExplainResult]
) -> None:
    for name, sample in samples.items():
        result = served[name]
        with torch.no_grad():
            probs = lite0(sample.tensor[None]).softmax(dim=1)[0]
        print(name, ", ".join(f"{p.label} {p.score:.3f}" for p in result.predictions[:3]))
        assert result.predictions[0].class_id == int(probs.argmax())
        assert result.predictions[0].score == pytest.approx(float(probs.max()), abs=1e-4)
        assert result.predictions[0].label == imagenet.labels()[result.predictions[0].class_id]
        assert result.geometry is not None
        assert result.geometry.crop.as_tuple() == sample.geometry.crop
        assert result.geometry.input_size == imagenet.INPUT_SIZE
    assert served["cat"].predictions[0].label in ("Egyptian cat", "tabby")
    assert served["espresso"].predictions[0].label == "espresso"
    assert served["rocket"].predictions[0].label in ("missile", "projectile")
    assert served["astronaut"].predictions[0].score < 0.5


@pytest.mark.integration
def test_served_gradcam_matches_pytorch_grad_cam(
    lite0: nn.Module, samples: dict[str, SampleInput], served: dict[str, camserve.ExplainResult]
) -> None:
    result = served["cat"]
    target = result.predictions[0].class_id
    for method, cam_class in (("gradcam", GradCAM), ("gradcam++", GradCAMPlusPlus)):
        reference = pgc_raw_cam(cam_class, lite0, LAYER, samples["cat"].tensor, target)
        assert _report(f"{method} vs pytorch-grad-cam", result.map(method, LAYER), reference) < TOL


@pytest.mark.integration
def test_served_guided_backprop_matches_captum(
    lite0: nn.Module, samples: dict[str, SampleInput], served: dict[str, camserve.ExplainResult]
) -> None:
    result = served["cat"]
    x = samples["cat"].tensor[None].clone().requires_grad_(True)
    target = result.predictions[0].class_id
    reference = GuidedBackprop(relu6_as_relu_copy(lite0)).attribute(x, target=target)[0].detach()
    assert _report("guided backprop vs Captum (ReLU6 as ReLU)", result.map("guided_backprop"), reference) < TOL
