"""The image-classifier handler: predictions plus Grad-CAM-family and gradient maps from ``handlers.engine``."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Final

import torch
from torch import nn

from handlers.engine import Explainer, Explanation
from handlers.engine.errors import InvalidArgumentError
from handlers.serving._codec import (
    Capabilities,
    ImageInput,
    ImageOutcome,
    MapResult,
    ParsedRequest,
    PredictionResult,
)
from handlers.serving._config import ServingConfig
from handlers.serving.base import ExplainHandler, measure_method_shapes, probe_layers

__all__ = ["ClassifierHandler"]

#: Methods used when the model config lists no defaults (those of them the model supports).
FALLBACK_DEFAULT_METHODS: Final = ("gradcam", "saliency")


class ClassifierHandler(ExplainHandler[Explainer]):
    """TorchServe handler for image classifiers (``kind: classifier``)."""

    kind = "classifier"

    def load_engine(self, model: nn.Module, config: ServingConfig, device: torch.device) -> Capabilities:
        """Builds the :class:`Explainer`, checks the config's defaults against it and measures map sizes."""
        from model_store import zoo

        labels = config.labels if config.labels is not None else zoo.info(config.model).get("labels")
        explainer = Explainer(
            model,
            layers=config.default_layers or None,
            labels=list(labels) if labels is not None else None,
            amp=config.amp,
            input_size=config.input_size,
        )
        methods = explainer.methods
        unknown = [m for m in config.default_methods if m not in methods]
        if unknown:
            raise InvalidArgumentError(
                f"model config camserve.default_methods has {unknown}, not applicable here; available: {methods}",
                field="camserve.default_methods",
            )
        default_methods = config.default_methods or (
            tuple(m for m in FALLBACK_DEFAULT_METHODS if m in methods) or methods[:1]
        )
        candidates = explainer.candidate_layers
        default_layers = explainer.default_layers
        probed = tuple(dict.fromkeys((*candidates, *default_layers)))
        grids, output_shape = probe_layers(model, probed, config.input_size, device)
        if len(output_shape) != 2:
            raise InvalidArgumentError(f"a classifier must return [batch, classes] logits, got {list(output_shape)}")
        num_classes = output_shape[1]
        if labels is not None and len(labels) != num_classes:
            raise InvalidArgumentError(
                f"{len(labels)} labels for a model with {num_classes} outputs", field="camserve.labels"
            )
        # One dry run on zeros: the shape of every method's map (and a warm-up of the whole path).
        [dry] = explainer.explain(
            torch.zeros(1, 3, *config.input_size, device=device),
            methods=methods,
            layers=default_layers[:1],
            top_predictions=1,
        )
        method_shapes, layer_methods = measure_method_shapes(dry.maps, default_layers[0], grids)
        self._explainer = explainer
        return Capabilities(
            kind="classifier",
            methods=methods,
            default_methods=default_methods,
            layers=candidates,
            default_layers=default_layers,
            layer_methods=layer_methods,
            layer_grids=grids,
            method_shapes=method_shapes,
            labels=tuple(labels) if labels is not None else None,
            num_classes=num_classes,
            input_size=config.input_size,
            limits=config.limits,
        )

    def group_key(self, parsed: ParsedRequest, image: ImageInput) -> Hashable:
        """Same methods, layers and prediction count, and the same kind of target (top-k or class ids)."""
        kind = "top_k" if image.target.class_ids is None else "classes"
        return (parsed.methods, parsed.layers, parsed.output.top_predictions, kind)

    def explain_group(self, parsed: ParsedRequest, images: Sequence[ImageInput]) -> list[ImageOutcome]:
        """One engine call for the group, with each image's own targets."""
        batch = torch.stack([image.pixels for image in images]).to(self.loaded.device)
        layers = parsed.layers or None
        top = parsed.output.top_predictions
        if images[0].target.class_ids is None:
            top_k = [int(im.target.top_k or 1) for im in images]
            results = self.explainer.explain(batch, parsed.methods, layers, top_k=top_k, top_predictions=top)
        else:
            targets: list[int | list[int]] = [list(im.target.class_ids or ()) for im in images]
            results = self.explainer.explain(batch, parsed.methods, layers, targets=targets, top_predictions=top)
        return [_outcome(result) for result in results]


def _outcome(result: Explanation) -> ImageOutcome:
    predictions = tuple(
        PredictionResult(p.class_id, float(p.score), float(p.logit), p.label or "") for p in result.predictions
    )
    maps = tuple(
        MapResult(key.method, key.layer, int(key.target), values.detach().to("cpu", torch.float32))
        for key, values in result.maps.items()
    )
    return ImageOutcome(predictions=predictions, maps=maps, targets=tuple(int(t) for t in result.targets))
