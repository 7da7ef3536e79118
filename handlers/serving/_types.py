"""The serving side's domain types: what the loaded model offers, and a request once it is validated.

The request parser (:mod:`handlers.serving._parse`) produces these from protobuf; the response bound, the encoders and
the handler read them. None of them carries protobuf, and none copies the engine's results: the encoders write the
engine's :class:`~handlers.engine.Explanation` objects as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import torch

from handlers.engine import ConsistencySpec, Cost, FeatureMapSpec, MethodParams
from handlers.engine.errors import CamserveError
from handlers.preprocess import Geometry
from handlers.serving._config import Kind, Limits
from handlers.serving._maps import EncodingName

__all__ = [
    "DEFAULT_TOP_PREDICTIONS",
    "Capabilities",
    "ImageFailure",
    "ImageInput",
    "InsightSpec",
    "MethodShape",
    "OutputSpec",
    "ParsedRequest",
    "RegionSpec",
    "Resolution",
    "TargetSpec",
    "Timing",
]

Resolution = Literal["NATIVE", "INPUT"]

DEFAULT_TOP_PREDICTIONS: Final = 5


@dataclass(frozen=True)
class MethodShape:
    """The native size of one method's maps.

    Attributes:
        grid: True for maps on the layer's grid (``[h, w]`` of the layer); False for a fixed shape.
        fixed: The fixed shape (e.g. ``[3, H, W]`` for input gradients) when ``grid`` is False.
        count: Maps per layer when they do not follow the image's targets or regions (VAE ``latent_gradcam``: one
            per latent channel plus their mean; the VAE anomaly maps: 1); 0 = one map per target or region.
    """

    grid: bool
    fixed: tuple[int, ...] = ()
    count: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What the loaded model offers; the parser validates requests against it, the response bound sizes answers with it.

    Attributes:
        kind: ``"classifier"`` or ``"vae"``.
        methods: Applicable method names.
        default_methods: Used when a request names none.
        layers: Candidate layers (dotted names) in forward order.
        default_layers: Used when a request names none.
        layer_methods: Methods that give one map per layer (the others give one map at the input, layer ``""``).
        layer_grids: ``(h, w)`` of every candidate layer at the input size.
        method_shapes: Native map size rule per method.
        labels: Class names by id (classifiers), or ``None``.
        num_classes: Number of model outputs (classifiers; 0 for a VAE).
        input_size: Model input ``(H, W)``; also the VAE's reconstruction size.
        limits: Per-request limits.
        method_costs: What each method declares it costs in model passes (empty: nothing beyond the prediction).
        layer_channels: Channels of each layer's grid (for the cost of methods that scale with them).
    """

    kind: Kind
    methods: tuple[str, ...]
    default_methods: tuple[str, ...]
    layers: tuple[str, ...]
    default_layers: tuple[str, ...]
    layer_methods: frozenset[str]
    layer_grids: Mapping[str, tuple[int, int]]
    method_shapes: Mapping[str, MethodShape]
    labels: tuple[str, ...] | None
    num_classes: int
    input_size: tuple[int, int]
    limits: Limits
    method_costs: Mapping[str, Cost] = field(default_factory=dict)
    layer_channels: Mapping[str, int] = field(default_factory=dict)
    label_ids: Mapping[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ids: dict[str, int] = {}
        for i, name in enumerate(self.labels or ()):
            ids.setdefault(name, i)  # duplicated labels resolve to the first id
        object.__setattr__(self, "label_ids", ids)

    def map_shape(self, method: str, layer: str) -> tuple[int, ...]:
        """Native shape of ``method``'s map on ``layer`` (``""`` for input methods)."""
        rule = self.method_shapes[method]
        return self.layer_grids[layer] if rule.grid else rule.fixed


@dataclass(frozen=True)
class OutputSpec:
    """Output options: map encoding, resolution, VAE reconstruction, predictions per image."""

    encoding: EncodingName = "FLOAT16"
    resolution: Resolution = "NATIVE"
    include_reconstruction: bool = False
    top_predictions: int = DEFAULT_TOP_PREDICTIONS


@dataclass(frozen=True)
class TargetSpec:
    """Classifier targets of one image: the top ``top_k`` classes, or explicit ``class_ids`` (exactly one set)."""

    top_k: int | None = 1
    class_ids: tuple[int, ...] | None = None

    @property
    def count(self) -> int:
        """Number of targets (maps per method and layer)."""
        return len(self.class_ids) if self.class_ids is not None else int(self.top_k or 1)


@dataclass(frozen=True, eq=False)
class RegionSpec:
    """A VAE region in reconstruction pixels: a half-open ``box`` or a boolean ``mask`` ``[H, W]``."""

    box: tuple[int, int, int, int] | None = None
    mask: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class ImageInput:
    """One decoded, validated image ready for the engine."""

    index: int
    id: str
    pixels: torch.Tensor
    geometry: Geometry
    target: TargetSpec
    regions: tuple[RegionSpec, ...] = ()


@dataclass(frozen=True)
class ImageFailure:
    """An image that failed decoding or validation; the other images of its request are unaffected."""

    index: int
    id: str
    error: CamserveError


@dataclass(frozen=True)
class InsightSpec:
    """The "look inside" extras of a classifier request, beside its maps.

    Attributes:
        feature_maps: The top channels of layers (its ``layers`` always resolved), or ``None``.
        consistency: The consistency check of every map, or ``None``.
        consistency_maps: Whether the consistency check's mapped-back maps are returned (not only its numbers).
    """

    feature_maps: FeatureMapSpec | None = None
    consistency: ConsistencySpec | None = None
    consistency_maps: bool = True


@dataclass(frozen=True, eq=False)
class ParsedRequest:
    """A validated request. ``describe`` requests carry no images."""

    request_id: str
    describe: bool
    methods: tuple[str, ...]
    layers: tuple[str, ...]
    output: OutputSpec
    images: tuple[ImageInput | ImageFailure, ...]
    options: MethodParams = field(default_factory=MethodParams)
    insight: InsightSpec = InsightSpec()

    @property
    def valid_images(self) -> tuple[ImageInput, ...]:
        """The images that decoded and validated."""
        return tuple(im for im in self.images if isinstance(im, ImageInput))


@dataclass(frozen=True)
class Timing:
    """Server-side timing of one request, in milliseconds, and the TorchServe batch size it was part of."""

    decode_ms: float = 0.0
    explain_ms: float = 0.0
    encode_ms: float = 0.0
    batch_size: int = 0
