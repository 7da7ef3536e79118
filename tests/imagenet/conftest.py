"""Shared fixtures for the ImageNet EfficientNet-Lite0 tests: the model once per session and the sample inputs."""

from __future__ import annotations

import pytest
import torch
from imagenet_helpers import SampleInput
from PIL import Image
from torch import nn

from model_store import imagenet


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    """EfficientNet-Lite0 with the packaged ImageNet weights (eval, frozen, CPU)."""
    torch.manual_seed(0)
    return imagenet.build()


@pytest.fixture(scope="session")
def samples() -> dict[str, SampleInput]:
    """The four sample photographs, preprocessed exactly as the served config asks."""
    pre = imagenet.preprocessor()
    out: dict[str, SampleInput] = {}
    for name in imagenet.SAMPLES:
        with Image.open(imagenet.sample_path(name)) as img:
            tensor, geometry = pre.from_pil(img.convert("RGB"))
        out[name] = SampleInput(name, tensor, geometry)
    return out
