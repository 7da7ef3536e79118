"""The frozen values a call returns: predictions, geometry, timing, one image's :class:`ExplainResult`, model info.

They are plain data built by :mod:`camserve._decode` at the protobuf edge; maps are :class:`~camserve.Map` values
(:mod:`camserve._maps`). The VAE reconstruction is an image, ``H x W x 3`` in [0, 1]. All arrays are float32 and
read-only, so a result can be shared between threads without copies going stale.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from camserve._insight import Agreement, FeatureMap
from camserve._maps import Map, MapKey, check_map_array, resize_array
from camserve.errors import CamserveError, InvalidArgument, NotFound


@dataclass(frozen=True)
class Prediction:
    """One class score. ``label`` is ``""`` when the model has no label map."""

    class_id: int
    label: str
    score: float
    logit: float


@dataclass(frozen=True)
class Box:
    """A half-open pixel box: ``x0 <= x < x1``, ``y0 <= y < y1``."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        """``x1 - x0``."""
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        """``y1 - y0``."""
        return self.y1 - self.y0

    def as_tuple(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``."""
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class Geometry:
    """Where the model's input came from in the image that was sent.

    Attributes:
        original_size: ``(height, width)`` of the image as sent (after EXIF orientation).
        crop: The part of it the model saw (after resize and centre crop), in original pixels.
        input_size: ``(height, width)`` of the model input; ``resolution="input"`` maps have this size.
    """

    original_size: tuple[int, int]
    crop: Box
    input_size: tuple[int, int]

    def to_original(self, array: np.ndarray | Map, *, fill: float = 0.0) -> np.ndarray:
        """Places a map (any resolution, of the model's input crop) onto the original image's pixel grid.

        The map is bilinearly resized to the crop box and pasted there; pixels outside the crop (the model never
        saw them) get ``fill`` (use ``float("nan")`` to tell them apart).

        Args:
            array: A :class:`Map` or a ``[H, W]`` / ``[C, H, W]`` array covering the model's input crop.
            fill: Value for pixels outside the crop.

        Returns:
            float32 ``[orig_h, orig_w]`` (or ``[C, orig_h, orig_w]``).

        Raises:
            InvalidArgument: ``array`` is not a map-shaped array, or the crop box is empty.
        """
        a = check_map_array(array)
        orig_h, orig_w = self.original_size
        box = self.crop
        if box.width <= 0 or box.height <= 0:
            raise InvalidArgument(f"empty crop box {box}", field="geometry.crop")
        resized = resize_array(a, (box.height, box.width))
        canvas = np.full((*a.shape[:-2], orig_h, orig_w), fill, dtype=np.float32)
        # The crop box normally lies inside the image; clip in case a server rounds it just outside.
        x0, y0 = max(box.x0, 0), max(box.y0, 0)
        x1, y1 = min(box.x1, orig_w), min(box.y1, orig_h)
        if x1 > x0 and y1 > y0:
            canvas[..., y0:y1, x0:x1] = resized[..., y0 - box.y0 : y1 - box.y0, x0 - box.x0 : x1 - box.x0]
        return canvas


@dataclass(frozen=True)
class Timing:
    """Where the time of one call went. Server times are for the request this image was part of.

    Attributes:
        decode_ms: Server: decoding and validating the request.
        explain_ms: Server: the engine's share of the TorchServe batch (forward and backward passes).
        encode_ms: Server: encoding the response.
        batch_size: Server: size of the TorchServe batch the request ran in.
        round_trip_ms: Client: from sending the request to having decoded the response (retries included).
    """

    decode_ms: float = 0.0
    explain_ms: float = 0.0
    encode_ms: float = 0.0
    batch_size: int = 0
    round_trip_ms: float = 0.0


@dataclass(frozen=True, eq=False)
class ExplainResult:
    """The predictions and explanation maps for one image.

    Attributes:
        index: The image's position in the call (in ``explain_many``: in the whole stream).
        id: The image's id (yours via :class:`camserve.Input`, else its index as text).
        predictions: Highest scores first (classifiers; empty for VAEs).
        maps: Every map by :class:`MapKey` ``(method, layer, target)``; see :meth:`map` for lookups.
        reconstruction: VAE reconstruction ``H x W x 3`` in [0, 1] when asked for, else None.
        geometry: How the model's input relates to the image you sent (None if the server did not say).
        timing: Server and client times.
        model_name: The model that answered.
        model_version: Its version.
        error: The in-band error for this image (its maps and predictions are then empty), or None.
        feature_maps: With ``feature_maps=``: the layers' top channels, layer by layer, best first.
        consistency: With ``consistency=``: one :class:`camserve.Agreement` per map and transform.
    """

    index: int
    id: str
    predictions: tuple[Prediction, ...]
    maps: Mapping[MapKey, Map]
    reconstruction: np.ndarray | None
    geometry: Geometry | None
    timing: Timing
    model_name: str = ""
    model_version: str = ""
    error: CamserveError | None = None
    feature_maps: tuple[FeatureMap, ...] = ()
    consistency: tuple[Agreement, ...] = ()

    def __repr__(self) -> str:
        if self.error is not None:
            return f"ExplainResult(index={self.index}, id={self.id!r}, error={self.error!r})"
        top = f"{self.top.label or self.top.class_id} {self.top.score:.3f}" if self.top else None
        return f"ExplainResult(index={self.index}, id={self.id!r}, top={top!r}, maps={list(self.maps)})"

    @property
    def ok(self) -> bool:
        """True when this image was explained (no in-band error)."""
        return self.error is None

    def raise_for_error(self) -> ExplainResult:
        """Raises this image's in-band error, if any; returns self so calls can be chained."""
        if self.error is not None:
            raise self.error
        return self

    @property
    def top(self) -> Prediction | None:
        """The highest-scoring prediction, or None (VAEs, failed images)."""
        return self.predictions[0] if self.predictions else None

    @property
    def methods(self) -> tuple[str, ...]:
        """Method names present, in response order."""
        return tuple(dict.fromkeys(k.method for k in self.maps))

    @property
    def layers(self) -> tuple[str, ...]:
        """Layer names present (``""`` for input-level methods), in response order."""
        return tuple(dict.fromkeys(k.layer for k in self.maps))

    @property
    def targets(self) -> tuple[int, ...]:
        """Target class ids (or region indices) present, in response order."""
        return tuple(dict.fromkeys(k.target for k in self.maps))

    def __iter__(self) -> Iterator[Map]:
        return iter(self.maps.values())

    def map(self, method: str, layer: str | None = None, target: int | None = None) -> Map:
        """The one map for ``method`` (and ``layer``/``target`` when several match).

        Raises:
            CamserveError: This image failed (its in-band error).
            NotFound: No map matches, or several do and ``layer``/``target`` must say which (the message lists
                what there is). It is a ``KeyError``, like a failed dict lookup.
        """
        self.raise_for_error()
        found = [
            m
            for k, m in self.maps.items()
            if k.method == method and (layer is None or k.layer == layer) and (target is None or k.target == target)
        ]
        if len(found) == 1:
            return found[0]
        have = ", ".join(f"({k.method!r}, {k.layer!r}, {k.target})" for k in self.maps) or "none"
        want = f"({method!r}, {layer!r}, {target!r})"
        if not found:
            raise NotFound(f"no map {want}; maps: {have}", field="method")
        raise NotFound(f"{len(found)} maps match {want}: give layer= and/or target=; maps: {have}", field="method")

    def agreement(self, method: str, transform: str, layer: str | None = None, target: int | None = None) -> Agreement:
        """The consistency check's one :class:`camserve.Agreement` for a map and a transform.

        Raises:
            CamserveError: This image failed (its in-band error).
            NotFound: None matches, or several do and ``layer``/``target`` must say which.
        """
        self.raise_for_error()
        found = [
            a
            for a in self.consistency
            if a.method == method
            and a.transform == transform
            and (layer is None or a.layer == layer)
            and (target is None or a.target == target)
        ]
        if len(found) == 1:
            return found[0]
        have = ", ".join(sorted({f"({a.method!r}, {a.layer!r}, {a.target}, {a.transform})" for a in self.consistency}))
        want = f"({method!r}, {layer!r}, {target!r}, {transform!r})"
        what = "no agreement" if not found else f"{len(found)} agreements match"
        raise NotFound(f"{what} {want}; have: {have or 'none (ask with consistency=True)'}", field="consistency")

    def to_original(self, array: np.ndarray | Map, *, fill: float = 0.0) -> np.ndarray:
        """Maps a map onto the original image's pixels; see :meth:`Geometry.to_original`.

        Raises:
            InvalidArgument: The server sent no geometry for this image (e.g. it failed).
        """
        if self.geometry is None:
            raise InvalidArgument("the server sent no geometry for this image", field="geometry")
        return self.geometry.to_original(array, fill=fill)

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary (no arrays): id, predictions, map keys and shapes, geometry, timing, error."""
        out: dict[str, object] = {"index": self.index, "id": self.id, "model": self.model_name}
        if self.error is not None:
            out["error"] = {"code": self.error.code, "message": self.error.message, "field": self.error.field}
            return out
        out["predictions"] = [vars(p) for p in self.predictions]
        out["maps"] = [{"method": m.method, "layer": m.layer, "target": m.target, "shape": list(m.shape)} for m in self]
        if self.geometry is not None:
            g = self.geometry
            out["geometry"] = {
                "original_size": list(g.original_size),
                "crop": list(g.crop.as_tuple()),
                "input_size": list(g.input_size),
            }
        if self.reconstruction is not None:
            out["reconstruction_shape"] = list(self.reconstruction.shape)
        if self.feature_maps:
            out["feature_maps"] = [
                {
                    "layer": f.layer,
                    "channel": f.channel,
                    "score": f.score,
                    "target": f.target,
                    "shape": list(f.array.shape),
                }
                for f in self.feature_maps
            ]
        if self.consistency:
            out["consistency"] = [
                {
                    "method": a.method,
                    "layer": a.layer,
                    "target": a.target,
                    "transform": a.transform,
                    "spearman": None if math.isnan(a.spearman) else a.spearman,
                    "iou": None if math.isnan(a.iou) else a.iou,
                    "coverage": a.coverage,
                }
                for a in self.consistency
            ]
        out["timing"] = vars(self.timing)
        json.dumps(out)  # fail here, not in the caller, if something is not JSON-ready
        return out


@dataclass(frozen=True)
class ModelInfo:
    """What a model offers (from ``describe``).

    Attributes:
        name: The model's name on the server.
        version: Its version.
        kind: ``"classifier"`` or ``"vae"``.
        methods: Method names it can compute.
        default_methods: Methods used when a request names none.
        layers: Layers that can be explained (dotted names, forward order).
        default_layers: Layers used when a request names none.
        labels: Label map by class id (classifiers).
        input_size: Model input ``(height, width)``.
        max_images: Server limit on images per request.
        max_top_k: Server limit on top_k.
        max_regions: Server limit on regions per image.
        max_image_bytes: Server limit on one encoded image file, bytes.
        max_pixels: Server limit on width x height of one image.
        max_response_bytes: Server limit on one response, bytes.
        versions: Server software versions (camserve, torch, ...).
        method_costs: What each method costs in model passes, by name (empty from a server that sends none).
    """

    name: str
    version: str
    kind: str
    methods: tuple[str, ...]
    default_methods: tuple[str, ...]
    layers: tuple[str, ...]
    default_layers: tuple[str, ...]
    labels: tuple[str, ...]
    input_size: tuple[int, int]
    max_images: int
    max_top_k: int
    max_regions: int
    max_image_bytes: int
    max_pixels: int
    max_response_bytes: int
    versions: Mapping[str, str]
    method_costs: Mapping[str, MethodCost] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodCost:
    """What one method costs per image beyond the prediction's forward (``ModelInfo.method_costs``).

    Forward inputs: ``fixed_forwards + forwards * units``; backward passes per target: ``backwards * units``, where
    ``units`` is the product of the ``per`` quantities (``"steps"``, ``"samples"``, a layer's ``"channels"``).

    Attributes:
        forwards: Forward inputs per unit.
        backwards: Backward passes per unit and target.
        per: What the passes scale with.
        fixed_forwards: Forward inputs that do not scale.
        bounds: The model's upper bound of each ``per`` quantity, and ``"passes"``: the most passes one request
            may cost.
    """

    forwards: int
    backwards: int
    per: tuple[str, ...]
    fixed_forwards: int
    bounds: Mapping[str, int]

    def passes(self, targets: int = 1, **units: int) -> int:
        """Forward inputs plus backward passes for one image, e.g. ``cost.passes(steps=50)``.

        Raises:
            InvalidArgument: A ``per`` quantity is not given.
        """
        missing = [u for u in self.per if u not in units]
        if missing:
            raise InvalidArgument(f"give {', '.join(missing)} to count this method's passes", field=missing[0])
        n = 1
        for unit in self.per:
            n *= int(units[unit])
        return self.fixed_forwards + self.forwards * n + self.backwards * n * targets


@dataclass(frozen=True)
class ModelEntry:
    """A model registered on the server (from ``models``)."""

    name: str
    url: str
