"""The VAE handler: area maps for regions of the reconstruction (and latent attention) from ``handlers.engine``.

A VAE answers "which input pixels was this part of the reconstruction rebuilt from?". Each image carries its
regions (``Image.regions``, else ``ExplainRequest.regions``, else the whole reconstruction), validated by ``_parse``
with the field at fault. Maps are keyed by (method, layer, region index): ``Map.target`` is the region's index in
the image's regions, except for ``latent_gradcam``, which explains the encoder and not a region (``target`` = the
latent channel, ``-1`` = the mean over channels, :data:`handlers.engine.LATENT_TOTAL`), and for the anomaly maps
(``anomaly_recon_error``, ``anomaly_latent``), one per image whatever its regions (``target`` = ``-1``,
:data:`handlers.engine.IMAGE_TARGET`).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import replace
from typing import Final

import torch
from torch import nn

from handlers.engine import Box, Mask, Region, VAEExplainer, VAEExplanation, get_vae_method
from handlers.engine.errors import CamserveError, InternalError, InvalidArgumentError
from handlers.serving._config import ServingConfig
from handlers.serving._facts import default_methods, layer_grids, measure_method_shapes
from handlers.serving._types import Capabilities, ImageInput, ParsedRequest, RegionSpec
from handlers.serving.base import ExplainHandler

__all__ = ["VAEHandler"]

_log = logging.getLogger(__name__)

#: Methods used when the model config lists no defaults (those of them the model supports). Not ``area_gradcam``: its
#: gradients averaged over the whole grid do not localise a region (measured in ``handlers/engine/_vae/README.md``).
FALLBACK_DEFAULT_METHODS: Final = ("area_saliency", "area_layercam")


class VAEHandler(ExplainHandler[VAEExplainer]):
    """TorchServe handler for VAEs with ``encode(x) -> (mu, logvar)`` and ``decode(z)`` (``kind: vae``)."""

    kind = "vae"

    def load_engine(
        self, model: nn.Module, labels: tuple[str, ...] | None, config: ServingConfig, device: torch.device
    ) -> Capabilities:
        """Builds the :class:`VAEExplainer`, keeps the encoder layers every layer method can use, measures map sizes.

        Raises:
            InvalidArgumentError: Config keys that do not apply to a VAE (``labels``), default methods or
                layers the model cannot run, or a reconstruction whose size differs from the input (regions are
                validated in input coordinates).
        """
        if config.labels is not None:
            raise InvalidArgumentError("a VAE has no classes; set labels: null", field="camserve.labels")
        explainer = VAEExplainer(
            model,
            layers=config.default_layers or None,
            input_size=config.input_size,
            amp=config.amp,
            channels_last=config.channels_last,
        )
        if explainer.output_size() != config.input_size:
            raise InvalidArgumentError(
                f"the reconstruction is {explainer.output_size()} for input {config.input_size}; regions need equal "
                "sizes",
                field="camserve.input_size",
            )
        methods = explainer.methods
        defaults = default_methods(config.default_methods, methods, FALLBACK_DEFAULT_METHODS)
        zeros = torch.zeros(1, 3, *config.input_size, device=device)
        whole: list[list[Region]] = [[Box(0, 0, config.input_size[1], config.input_size[0])]]
        layer_methods = tuple(m for m in methods if get_vae_method(m).scope == "layer")
        layers = _usable_layers(explainer, explainer.candidate_layers, layer_methods, zeros, whole)
        default_layers = explainer.default_layers
        if layer_methods and (not default_layers or any(layer not in layers for layer in default_layers)):
            raise InvalidArgumentError(
                f"default layers {list(default_layers)} are not all usable by {list(layer_methods)}; usable: "
                f"{list(layers)}",
                field="camserve.default_layers",
            )
        grids = layer_grids(explainer.layer_grids, (*layers, *default_layers), config.input_size)
        # One dry run on zeros: the shape of every method's map (and a warm-up of the whole path).
        [dry] = explainer.explain(zeros, methods, regions=whole, layers=default_layers[:1] or None)
        method_shapes, layer_method_set = measure_method_shapes(dry.maps, (*default_layers, "")[0], grids)
        # Maps that do not follow the image's regions: one per latent channel and their mean, or one per image.
        counts = {"latents": explainer.latent_dims(config.input_size) + 1, "image": 1}
        for name in methods:
            rows = get_vae_method(name).rows
            if name in method_shapes and rows in counts:
                method_shapes[name] = replace(method_shapes[name], count=counts[rows])
        self._explainer = explainer
        return Capabilities(
            kind="vae",
            methods=methods,
            default_methods=defaults,
            layers=layers,
            default_layers=default_layers,
            layer_methods=layer_method_set,
            layer_grids=grids,
            method_shapes=method_shapes,
            labels=None,
            num_classes=0,
            input_size=config.input_size,
            limits=config.limits,
        )

    def group_key(self, parsed: ParsedRequest, image: ImageInput) -> Hashable:
        """Same methods and layers; regions are per image (any count and kind) within one engine call."""
        return (parsed.methods, parsed.layers)

    def explain_group(self, parsed: ParsedRequest, images: Sequence[ImageInput]) -> Sequence[VAEExplanation]:
        """One engine call for the group, with each image's own regions (the reconstruction is always returned)."""
        batch = torch.stack([image.pixels for image in images])  # the engine copies it to the device (pinned)
        regions = [[_engine_region(r) for r in image.regions] for image in images]
        return self.explainer.explain(batch, parsed.methods, regions=regions, layers=parsed.layers or None)


def _usable_layers(
    explainer: VAEExplainer,
    candidates: Sequence[str],
    methods: Sequence[str],
    zeros: torch.Tensor,
    whole: list[list[Region]],
) -> tuple[str, ...]:
    """The candidate layers on which every layer method runs, so that ``ModelInfo.layers`` lists only layers a request
    can name (a module off the path from the input to ``mu`` and the reconstruction fails here, not in a request).
    One small dry run per layer, once at load."""
    if not methods:
        return ()
    usable: list[str] = []
    for layer in candidates:
        try:
            explainer.explain(zeros, methods, regions=whole, layers=(layer,), latents=(0,))
        except (CamserveError, RuntimeError) as exc:
            _log.info("VAE layer %s is not offered: %s", layer, exc)
            continue
        usable.append(layer)
    return tuple(usable)


def _engine_region(region: RegionSpec) -> Region:
    if region.box is not None:
        return Box(*region.box)
    if region.mask is not None:
        return Mask(region.mask)
    raise InternalError("a validated region has neither a box nor a mask")
