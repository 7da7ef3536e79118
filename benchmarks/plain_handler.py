"""The service benchmark's baseline: TorchServe's stock ``ImageClassifier`` handler serving a camserve zoo model.

Packaged as the handler file of the ``plain-*`` archives (benchmarks/_service_archives.py). Everything that runs
per request is TorchServe's own code: ``VisionHandler.preprocess`` (PIL decode, the torchvision transform),
``BaseHandler.inference`` (``torch.inference_mode`` forward), ``ImageClassifier.postprocess`` (softmax, top-k,
labels, JSON) and, for TorchServe's ``/explanations`` endpoint, ``BaseHandler.explain_handle`` with Captum's
Integrated Gradients (15 steps, the full ``[3, H, W]`` attribution as a JSON list). Only ``initialize`` differs from
the stock one: instead of a pickled or TorchScript file the model comes from ``model_store.zoo`` (the same eager
module and weights camserve's handler serves), and the transform, labels and top-k come from the zoo's metadata.
The model config names the model under ``plain: {model: SPEC, weights: FILE-or-null}``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from captum.attr import IntegratedGradients
from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier

from model_store import zoo


class PlainClassifier(ImageClassifier):  # type: ignore[misc]
    """TorchServe's image classifier with the zoo as its model loader (see the module docstring)."""

    def initialize(self, context: Any) -> None:
        section = (getattr(context, "model_yaml_config", None) or {}).get("plain") or {}
        spec = section.get("model")
        if not isinstance(spec, str):
            raise ValueError("the model config needs plain: {model: <zoo spec>}")
        properties = context.system_properties
        gpu_id = properties.get("gpu_id")
        use_cuda = torch.cuda.is_available() and gpu_id is not None
        self.device = torch.device(f"cuda:{gpu_id}" if use_cuda else "cpu")
        self.manifest = context.manifest
        weights = section.get("weights")
        path = Path(properties.get("model_dir") or ".") / weights if weights else None
        self.model = zoo.build(spec, path).to(self.device).eval()
        info = zoo.info(spec)
        self.image_processing = transforms.Compose(
            [
                transforms.Resize(int(info["resize"])),
                transforms.CenterCrop(int(info["crop"])),
                transforms.ToTensor(),
                transforms.Normalize(mean=list(info["mean"]), std=list(info["std"])),
            ]
        )
        labels = list(info["labels"] or ())
        self.mapping = {str(i): label for i, label in enumerate(labels)}
        self.topk = min(5, len(labels)) if labels else 5
        self.ig = IntegratedGradients(self.model)
        self.initialized = True
