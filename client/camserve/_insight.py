"""Looking inside the network: the feature-map and consistency options of a call and what comes back for them.

``client.explain(img, model=..., feature_maps=8)`` returns the top 8 channels of the explained layers (by mean
activation) in :attr:`ExplainResult.feature_maps`; ``consistency=True`` also explains flipped, shifted and rotated
copies of every image and returns how well each map agrees once mapped back, in :attr:`ExplainResult.consistency`.
:class:`FeatureMaps` and :class:`Consistency` give the finer options. Protobuf stays at this edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from camserve_proto.camserve.v1 import explain_pb2

from camserve.errors import InvalidArgument

__all__ = [
    "Agreement",
    "Consistency",
    "FeatureMap",
    "FeatureMaps",
    "consistency_message",
    "feature_maps_message",
    "transform_name",
]

Rank = Literal["mean", "gradcam"]
TransformName = Literal["hflip", "shift", "rotate"]

_RANKS: Final = {
    "mean": explain_pb2.CHANNEL_RANKING_MEAN_ACTIVATION,
    "gradcam": explain_pb2.CHANNEL_RANKING_GRADCAM_WEIGHT,
}
_TRANSFORMS: Final = {
    "hflip": explain_pb2.TRANSFORM_HFLIP,
    "shift": explain_pb2.TRANSFORM_SHIFT,
    "rotate": explain_pb2.TRANSFORM_ROTATE,
}
_TRANSFORM_NAMES: Final[dict[int, str]] = {int(v): k for k, v in _TRANSFORMS.items()}


@dataclass(frozen=True)
class FeatureMaps:
    """Which channels to return as feature maps (``explain(feature_maps=FeatureMaps(...))``; an int is ``top_n``).

    Attributes:
        top_n: Channels per layer (per explained target for ``rank="gradcam"``); None = the server's default (8).
        layers: Layer names; None = the call's ``layers``, else the model's default layers.
        rank: ``"mean"``: highest mean activation; ``"gradcam"``: highest Grad-CAM weight for each target.
    """

    top_n: int | None = None
    layers: tuple[str, ...] | None = None
    rank: Rank = "mean"


@dataclass(frozen=True)
class Consistency:
    """A consistency check (``explain(consistency=Consistency(...))``; ``True`` = all defaults).

    Every map of the call is recomputed on transformed copies of the image, for the same targets, and compared with
    the original after mapping it back. The copies count against the server's image limit.

    Attributes:
        transforms: Any of ``"hflip"``, ``"shift"``, ``"rotate"``; None = all three.
        shift: Fraction of the input's width and height, in (0, 0.5]; None = 0.125.
        angle: Degrees in [-90, 90], counter-clockwise, not 0; None = 15.
        top_fraction: The share of pixels whose top region the IoU compares, in (0, 1); None = 0.1.
        maps: Also return the mapped-back maps (``Agreement.mapped``), not only the numbers.
    """

    transforms: tuple[TransformName, ...] | None = None
    shift: float | None = None
    angle: float | None = None
    top_fraction: float | None = None
    maps: bool = True


@dataclass(frozen=True, eq=False)
class FeatureMap:
    """One channel of a layer's output for one image (the activations themselves, not normalised).

    Attributes:
        layer: The layer's dotted name.
        channel: The channel's index in the layer's output.
        score: What it was ranked by: its mean activation, or its Grad-CAM weight for ``target``.
        target: The class whose Grad-CAM weights ranked it; -1 when ranked by mean activation.
        array: ``[h, w]`` float32 at the layer's resolution (or the input's, with ``resolution="input"``).
    """

    layer: str
    channel: int
    score: float
    target: int
    array: np.ndarray


@dataclass(frozen=True, eq=False)
class Agreement:
    """How one map agrees with the same map of a transformed copy of the image, mapped back onto the original.

    Attributes:
        method: The map's method.
        layer: Its layer (``""`` for input-level methods).
        target: Its target class.
        transform: ``"hflip"``, ``"shift"`` or ``"rotate"``.
        spearman: Spearman rank correlation over the compared pixels (NaN when a map is constant there).
        iou: IoU of the two maps' top regions (NaN when neither has one).
        coverage: Fraction of the input's pixels compared.
        mapped: ``[H, W]`` float32, the copy's map in the original's geometry (0 where not compared), or None
            when the call asked for numbers only.
    """

    method: str
    layer: str
    target: int
    transform: str
    spearman: float
    iou: float
    coverage: float
    mapped: np.ndarray | None

    @property
    def ok(self) -> bool:
        """Whether both measures are defined (neither map was constant over the compared pixels)."""
        return not (math.isnan(self.spearman) or math.isnan(self.iou))


def transform_name(value: int) -> str:
    """The SDK's name of a contract ``Transform`` value (``"unknown"`` for one this SDK does not know)."""
    return _TRANSFORM_NAMES.get(value, "unknown")


def _number(value: object, field: str, low: float, high: float, *, low_open: bool, high_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise InvalidArgument(f"{field} must be a finite number, got {value!r}", field=field)
    v = float(value)
    if (v <= low if low_open else v < low) or (v >= high if high_open else v > high):
        raise InvalidArgument(f"{field} is out of range, got {v}", field=field)
    return v


def feature_maps_message(value: object) -> explain_pb2.FeatureMapOptions | None:
    """``feature_maps=`` as a ``FeatureMapOptions`` message: None, an int (top_n) or :class:`FeatureMaps`."""
    if value is None or value is False:
        return None
    spec: object = value
    if value is True:
        spec = FeatureMaps()
    elif isinstance(value, int):
        spec = FeatureMaps(top_n=value)
    if not isinstance(spec, FeatureMaps):
        raise InvalidArgument(
            f"feature_maps must be an int or camserve.FeatureMaps, got {value!r}", field="feature_maps"
        )
    msg = explain_pb2.FeatureMapOptions()
    if spec.top_n is not None:
        if isinstance(spec.top_n, bool) or not isinstance(spec.top_n, int) or spec.top_n < 1:
            raise InvalidArgument(f"top_n must be a positive integer, got {spec.top_n!r}", field="feature_maps.top_n")
        msg.top_n = spec.top_n
    if spec.rank not in _RANKS:
        raise InvalidArgument(f"rank must be 'mean' or 'gradcam', got {spec.rank!r}", field="feature_maps.rank")
    msg.ranking = _RANKS[spec.rank]
    if spec.layers is not None:
        layers = [spec.layers] if isinstance(spec.layers, str) else list(spec.layers)
        if not layers or not all(isinstance(n, str) and n for n in layers):
            raise InvalidArgument(f"layers must be non-empty names, got {spec.layers!r}", field="feature_maps.layers")
        msg.layers.extend(layers)
    return msg


def consistency_message(value: object) -> explain_pb2.ConsistencyOptions | None:
    """``consistency=`` as a ``ConsistencyOptions`` message: None/False, True or :class:`Consistency`."""
    if value is None or value is False:
        return None
    spec = Consistency() if value is True else value
    if not isinstance(spec, Consistency):
        raise InvalidArgument(f"consistency must be True or camserve.Consistency, got {value!r}", field="consistency")
    msg = explain_pb2.ConsistencyOptions(omit_maps=not spec.maps)
    if spec.transforms is not None:
        names = [spec.transforms] if isinstance(spec.transforms, str) else list(spec.transforms)
        if not names:
            raise InvalidArgument("transforms is empty (None = all three)", field="consistency.transforms")
        for i, name in enumerate(names):
            if name not in _TRANSFORMS:
                raise InvalidArgument(
                    f"unknown transform {name!r}; use hflip, shift or rotate", field=f"consistency.transforms[{i}]"
                )
        if len(set(names)) != len(names):
            raise InvalidArgument(f"transforms repeat: {names}", field="consistency.transforms")
        msg.transforms.extend(_TRANSFORMS[n] for n in names)
    if spec.shift is not None:
        msg.shift = _number(spec.shift, "consistency.shift", 0.0, 0.5, low_open=True, high_open=False)
    if spec.angle is not None:
        msg.angle_degrees = _number(spec.angle, "consistency.angle", -90.0, 90.0, low_open=False, high_open=False)
        if msg.angle_degrees == 0.0:
            raise InvalidArgument("angle must not be 0", field="consistency.angle")
    if spec.top_fraction is not None:
        field = "consistency.top_fraction"
        msg.top_fraction = _number(spec.top_fraction, field, 0.0, 1.0, low_open=True, high_open=True)
    return msg
