"""Helpers shared by the ImageNet tests (imported by module name, like tests/handlers/serving_helpers.py)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from handlers.serving._images import Geometry


@dataclass(frozen=True)
class SampleInput:
    """A bundled photograph as the model sees it: normalised input ``[3, 224, 224]`` and where it came from."""

    name: str
    tensor: torch.Tensor
    geometry: Geometry
