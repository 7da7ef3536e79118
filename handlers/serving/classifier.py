"""The image-classifier handler: predictions plus Grad-CAM-family and gradient maps from ``handlers.engine``."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Final

import torch
from torch import nn

from handlers.engine import Explainer, Explanation, MethodParams, get_method
from handlers.engine.errors import InvalidArgumentError
from handlers.serving._config import ServingConfig
from handlers.serving._facts import default_methods, layer_grids, measure_method_shapes
from handlers.serving._types import Capabilities, ImageInput, MethodShape, ParsedRequest
from handlers.serving.base import ExplainHandler

__all__ = ["ClassifierHandler"]

#: Methods used when the model config lists no defaults (those of them the model supports).
FALLBACK_DEFAULT_METHODS: Final = ("gradcam", "saliency")


class ClassifierHandler(ExplainHandler[Explainer]):
    """TorchServe handler for image classifiers (``kind: classifier``)."""

    kind = "classifier"

    def load_engine(
        self, model: nn.Module, labels: tuple[str, ...] | None, config: ServingConfig, device: torch.device
    ) -> Capabilities:
        """Builds the :class:`Explainer`, checks the config's defaults against it and measures map sizes."""
        explainer = Explainer(
            model,
            layers=config.default_layers or None,
            labels=list(labels) if labels is not None else None,
            amp=config.amp,
            input_size=config.input_size,
            channels_last=config.channels_last,
            black=[-m / s for m, s in zip(config.mean, config.std, strict=True)],
        )
        methods = explainer.methods
        defaults = default_methods(config.default_methods, methods, FALLBACK_DEFAULT_METHODS)
        candidates = explainer.candidate_layers
        default_layers = explainer.default_layers
        grids = layer_grids(explainer.layer_grids, (*candidates, *default_layers), config.input_size)
        zeros = torch.zeros(1, 3, *config.input_size, device=device)
        with torch.no_grad():
            logits = model(zeros)
        output_shape = tuple(int(d) for d in logits.shape) if isinstance(logits, torch.Tensor) else ()
        if len(output_shape) != 2:
            raise InvalidArgumentError(f"a classifier must return [batch, classes] logits, got {list(output_shape)}")
        num_classes = output_shape[1]
        if labels is not None and len(labels) != num_classes:
            raise InvalidArgumentError(
                f"{len(labels)} labels for a model with {num_classes} outputs", field="camserve.labels"
            )
        # One dry run on zeros: the shape of every method's map (and a warm-up of the whole path), with the fewest
        # steps and samples; methods that run one forward per channel are sized from their scope instead.
        per_channel = [m for m in methods if "channels" in get_method(m).cost.per]
        dry_methods = [m for m in methods if m not in per_channel]
        cheap = MethodParams(steps=2, samples=1, rule="riemann_trapezoid")
        [dry] = explainer.explain(
            zeros, methods=dry_methods, layers=default_layers[:1], top_predictions=1, options=cheap
        )
        method_shapes, layer_methods = measure_method_shapes(dry.maps, default_layers[0], grids)
        for name in per_channel:
            method_shapes[name] = MethodShape(grid=get_method(name).scope == "layer", fixed=(3, *config.input_size))
        layer_methods |= {m for m in per_channel if get_method(m).scope == "layer"}
        self._explainer = explainer
        return Capabilities(
            kind="classifier",
            methods=methods,
            default_methods=defaults,
            layers=candidates,
            default_layers=default_layers,
            layer_methods=layer_methods,
            layer_grids=grids,
            method_shapes=method_shapes,
            labels=tuple(labels) if labels is not None else None,
            num_classes=num_classes,
            input_size=config.input_size,
            limits=config.limits,
            method_costs={m: get_method(m).cost for m in methods},
            layer_channels=explainer.layer_channels(tuple(grids)),
        )

    def group_key(self, parsed: ParsedRequest, image: ImageInput) -> Hashable:
        """Same methods, layers, prediction count, method options, feature-map and consistency options, target kind."""
        kind = "top_k" if image.target.class_ids is None else "classes"
        insight = (parsed.insight.feature_maps, parsed.insight.consistency)
        return (parsed.methods, parsed.layers, parsed.output.top_predictions, kind, parsed.options, insight)

    def explain_group(self, parsed: ParsedRequest, images: Sequence[ImageInput]) -> list[Explanation]:
        """One engine call for the group, with each image's own targets."""
        batch = torch.stack([image.pixels for image in images])  # the engine copies it to the device (pinned)
        layers = parsed.layers or None
        top = parsed.output.top_predictions
        top_k: list[int] | None = None
        targets: list[int | list[int]] | None = None
        if images[0].target.class_ids is None:
            top_k = [int(im.target.top_k or 1) for im in images]
        else:
            targets = [list(im.target.class_ids or ()) for im in images]
        return self.explainer.explain(
            batch,
            parsed.methods,
            layers,
            targets=targets,
            top_k=top_k,
            top_predictions=top,
            feature_maps=parsed.insight.feature_maps,
            options=parsed.options,
            consistency=parsed.insight.consistency,
        )
