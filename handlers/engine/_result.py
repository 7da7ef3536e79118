"""The frozen, per-image result of :meth:`Explainer.explain` and its small value types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from handlers.engine.errors import InvalidArgumentError, NotFoundError

__all__ = ["CUSTOM_TARGET", "NO_TARGET", "Agreement", "Explanation", "FeatureMap", "MapKey", "Prediction"]

#: ``MapKey.target`` (and ``Explanation.targets``) value used when the target is a callable, not a class id.
CUSTOM_TARGET = -1
#: ``FeatureMap.target`` of channels ranked by mean activation, which belong to no target.
NO_TARGET = -1


class MapKey(NamedTuple):
    """Address of one map: method name, layer dotted name (``""`` for maps at the input) and target class."""

    method: str
    layer: str
    target: int


@dataclass(frozen=True)
class Prediction:
    """One of the model's top predictions for an image.

    Attributes:
        class_id: Index into the model output.
        score: Softmax probability of the class.
        logit: Raw model output for the class.
        label: Human-readable name when the explainer has a label map, else ``None``.
    """

    class_id: int
    score: float
    logit: float
    label: str | None = None


@dataclass(frozen=True, eq=False)
class FeatureMap:
    """One channel of a layer's output for one image, from the forward pass of the prediction.

    Attributes:
        layer: The layer's dotted name.
        channel: The channel index in the layer's output grid ``[C, h, w]``.
        score: What the channel was ranked by: its mean activation (``rank="mean"``) or its Grad-CAM weight
            ``mean_hw(dy/dA_c)`` for ``target`` (``rank="gradcam"``).
        target: The class whose Grad-CAM weights ranked the channel; ``NO_TARGET`` (-1) for ``rank="mean"``.
        values: ``[h, w]`` float32, the channel at the layer's native resolution, on the model's device.
    """

    layer: str
    channel: int
    score: float
    target: int
    values: Tensor


@dataclass(frozen=True, eq=False)
class Agreement:
    """How well one map survives one input transform (a consistency check).

    The image was transformed, explained again for the same target, and that map mapped back onto the original
    image's geometry (input resolution); both maps are compared on the pixels that stayed inside the image.

    Attributes:
        key: The original map's address (method, layer, target).
        transform: ``"hflip"``, ``"shift"`` or ``"rotate"``.
        spearman: Spearman rank correlation of the two maps over the compared pixels (NaN when either is constant).
        iou: Intersection over union of their top-``top_fraction`` regions (NaN when neither has one).
        coverage: Fraction of the input's pixels that were compared.
        mapped: ``[H, W]`` float32: the transformed image's map, mapped back (0 outside the compared pixels).
    """

    key: MapKey
    transform: str
    spearman: float
    iou: float
    coverage: float
    mapped: Tensor


@dataclass(frozen=True)
class Explanation:
    """Predictions and explanation maps for one image, from one forward pass.

    Attributes:
        predictions: The top predictions, best first.
        targets: The explained targets, in the order they were requested (``CUSTOM_TARGET`` for a callable).
        maps: Float32 maps on the model's device at native resolution: ``[h, w]`` for CAM-family maps (the layer's
            grid), ``[3, H, W]`` for input gradients (saliency, guided backprop, deconvnet) and guided Grad-CAM.
        input_size: The model input ``(H, W)`` the maps refer to.
        completeness_errors: For Integrated Gradients maps: ``|sum attr - (Y(x) - Y(baseline))| / |Y(x) -
            Y(baseline)|``, by the map's key (no entry for other methods).
        feature_maps: The requested layers' top channels (``explain(feature_maps=...)``), layer by layer, best
            first (per target, in target order, for ``rank="gradcam"``).
        consistency: One :class:`Agreement` per map and transform (``explain(consistency=...)``), in map order.
    """

    predictions: tuple[Prediction, ...]
    targets: tuple[int, ...]
    maps: Mapping[MapKey, Tensor]
    input_size: tuple[int, int]
    completeness_errors: Mapping[MapKey, float] = field(default_factory=lambda: MappingProxyType({}))
    feature_maps: tuple[FeatureMap, ...] = ()
    consistency: tuple[Agreement, ...] = ()

    def key(self, method: str, layer: str | None = None, target: int | None = None) -> MapKey:
        """Resolve a possibly partial address to the one matching :class:`MapKey`.

        ``layer=None`` and ``target=None`` match anything, but must then be unambiguous; this makes the common
        single-layer, single-target case a one-argument call.

        Raises:
            NotFoundError: No map matches.
            InvalidArgumentError: Several maps match; give ``layer`` and/or ``target``.
        """
        matches = [
            k
            for k in self.maps
            if k.method == method and (layer is None or k.layer == layer) and (target is None or k.target == target)
        ]
        if not matches:
            have = sorted({(k.method, k.layer, k.target) for k in self.maps})
            raise NotFoundError(f"no map for method={method!r} layer={layer!r} target={target!r}; have {have}")
        if len(matches) > 1:
            raise InvalidArgumentError(
                f"{len(matches)} maps match method={method!r} layer={layer!r} target={target!r}: "
                f"{sorted(matches)}; pass layer= and/or target="
            )
        return matches[0]

    def map(self, method: str, layer: str | None = None, target: int | None = None) -> Tensor:
        """The raw map at native resolution (see :meth:`key` for the addressing rules)."""
        return self.maps[self.key(method, layer, target)]

    def upsampled(
        self,
        method: str,
        layer: str | None = None,
        target: int | None = None,
        *,
        size: tuple[int, int] | None = None,
        mode: Literal["bilinear", "nearest", "bicubic"] = "bilinear",
    ) -> Tensor:
        """The map resized to ``size`` (default: the input size), ``[h, w]`` or ``[3, H, W]`` as stored."""
        m = self.map(method, layer, target)
        out_size = size or self.input_size
        if tuple(m.shape[-2:]) == tuple(out_size):
            return m
        batched = m.reshape(1, -1, *m.shape[-2:])
        align = None if mode == "nearest" else False
        return F.interpolate(batched, size=out_size, mode=mode, align_corners=align).reshape(*m.shape[:-2], *out_size)

    def normalized(
        self,
        method: str,
        layer: str | None = None,
        target: int | None = None,
        *,
        upsample: bool = False,
    ) -> Tensor:
        """The map min-max rescaled to ``[0, 1]`` (a constant map becomes all zeros), optionally upsampled first."""
        m = self.upsampled(method, layer, target) if upsample else self.map(method, layer, target)
        return minmax(m)


def minmax(m: Tensor) -> Tensor:
    """Rescale a whole tensor to ``[0, 1]``; a constant tensor maps to zeros."""
    lo, hi = m.min(), m.max()
    span = hi - lo
    return torch.where(span > 0, (m - lo) / torch.where(span > 0, span, 1.0), torch.zeros_like(m))
