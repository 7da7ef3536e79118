"""Builders shared by the VAE handler tests: a model directory as an archive unpacks, the model config, regions.

Imported as a top-level module (pytest prepends this folder to ``sys.path``), like ``serving_helpers``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from camserve_proto.camserve.v1 import explain_pb2
from serving_helpers import png_bytes, request

from model_store.manifest import MANIFEST_NAME, sha256_file
from model_store.models import ShapesVAE

WEIGHTS = "shapes-vae.pt"
LATENT_CHANNELS = 6
WIDTHS = (8, 12, 16)
MAX_RESPONSE = 1_000_000
ALL_METHODS = (
    "area_saliency",
    "area_guided",
    "area_gradcam",
    "area_layercam",
    "latent_gradcam",
    "anomaly_recon_error",
    "anomaly_latent",
)


def write_model_dir(folder: Path) -> Path:
    """A model directory as TorchServe unpacks an archive: random VAE weights and the manifest that vouches for them."""
    torch.manual_seed(0)
    torch.save(ShapesVAE(latent_channels=LATENT_CHANNELS, widths=WIDTHS).state_dict(), folder / WEIGHTS)
    entry = {
        "file": WEIGHTS,
        "sha256": sha256_file(folder / WEIGHTS),
        "config": {"latent_channels": LATENT_CHANNELS, "widths": list(WIDTHS)},
    }
    (folder / MANIFEST_NAME).write_text(json.dumps({"models": {"shapes-vae": entry}}))
    return folder


def config(**overrides: Any) -> dict[str, Any]:
    section = {
        "kind": "vae",
        "model": "shapes-vae",
        "weights": WEIGHTS,
        "input_size": [64, 64],
        "resize": 64,
        "default_methods": ["area_saliency", "area_gradcam"],
        "limits": {"max_images": 8, "max_regions": 4, "max_response_bytes": MAX_RESPONSE},
    }
    section.update(overrides)
    return {"minWorkers": 1, "batchSize": 8, "camserve": section}


def box(x0: int, y0: int, x1: int, y1: int) -> explain_pb2.Region:
    return explain_pb2.Region(box=explain_pb2.Box(x0=x0, y0=y0, x1=x1, y1=y1))


def mask_region(selected: np.ndarray) -> explain_pb2.Region:
    data = selected.astype(np.uint8).tobytes()
    return explain_pb2.Region(mask=explain_pb2.Mask(height=selected.shape[0], width=selected.shape[1], data=data))


def disc(cx: int, cy: int, radius: int, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.asarray((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2)


def image(data: bytes, *regions: explain_pb2.Region, image_id: str = "") -> explain_pb2.Image:
    return explain_pb2.Image(encoded=data, id=image_id, regions=list(regions))


def pixels_image(pixels: np.ndarray, *regions: explain_pb2.Region) -> explain_pb2.Image:
    raw = explain_pb2.Tensor(shape=list(pixels.shape), encoding=explain_pb2.FLOAT32, data=pixels.tobytes())
    return explain_pb2.Image(pixels=raw, regions=list(regions))


def several_requests() -> list[explain_pb2.ExplainRequest]:
    """Three requests with several regions per image: request defaults, per-image overrides, boxes and masks."""
    a = request(
        [png_bytes(seed=1), image(png_bytes(seed=2), box(40, 40, 64, 64), image_id="own")],
        methods=["area_saliency", "area_gradcam"],
        regions=[box(0, 0, 16, 16), mask_region(disc(32, 32, 6)), box(8, 40, 24, 56)],
        request_id="a",
        output=explain_pb2.OutputOptions(include_reconstruction=True),
    )
    b = request([png_bytes(80, 64, seed=3)], methods=["area_saliency", "area_gradcam"], request_id="b")
    c = request(
        [image(png_bytes(seed=4), box(16, 16, 48, 48), box(0, 0, 64, 8))],
        methods=["area_guided", "latent_gradcam"],
        layers=["encoder.2", "encoder"],
        request_id="c",
    )
    return [a, b, c]
