"""Frozen result objects with numpy arrays, decoded from ``camserve.v1.ExplainResponse`` at the edge.

Conventions: sizes are ``(height, width)`` like numpy shapes; maps keep the contract's layout (``[H, W]`` for
CAM-style maps, ``[3, H, W]`` for input gradients); the VAE reconstruction is an image, ``H x W x 3`` in [0, 1].
All arrays are float32 and read-only, so a result can be shared between threads without copies going stale.
"""

from __future__ import annotations

import io
import json
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from PIL import Image as PILImage

from camserve.errors import CamserveError, Internal, from_code

Reduction = Literal["abs_max", "positive", "negative", "luminance"]
Sign = Literal["all", "positive", "negative", "absolute"]

# ITU-R BT.601 luma weights, the usual grey conversion (PIL's "L" mode uses the same).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array, dtype=np.float32)
    array.flags.writeable = False
    return array


def _resize_plane(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one 2-D float plane (PIL, half-pixel centres: same as align_corners=False)."""
    if plane.shape == (height, width):
        return plane.astype(np.float32, copy=True)
    image = PILImage.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
    resized = image.resize((width, height), PILImage.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def resize_array(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``[H, W]`` or ``[C, H, W]`` float array to ``size = (height, width)``."""
    height, width = _check_size(size)
    a = np.asarray(array, dtype=np.float32)
    if a.ndim == 2:
        return _resize_plane(a, height, width)
    if a.ndim == 3:
        return np.stack([_resize_plane(p, height, width) for p in a])
    raise ValueError(f"expected a [H, W] or [C, H, W] array, got shape {a.shape}")


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return height, width


def normalize_array(array: np.ndarray) -> np.ndarray:
    """Min-max rescales to [0, 1]; a constant array becomes all zeros (nothing stands out)."""
    a = np.asarray(array, dtype=np.float32)
    lo, hi = float(a.min()), float(a.max())
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo <= 0.0:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


class MapKey(NamedTuple):
    """Address of one map: method name, layer (``""`` for input-level methods), target class id or region index."""

    method: str
    layer: str
    target: int


@dataclass(frozen=True, eq=False)
class Map:
    """One explanation map. Behaves as a numpy array (``np.asarray(m)``); operations return new maps.

    Attributes:
        method: Method name, e.g. ``"gradcam"``.
        layer: Dotted module name; ``""`` for methods computed at the input (saliency, guided backprop, ...).
        target: The class id explained (classifiers) or the region's index (VAEs).
        array: float32, read-only: ``[H, W]`` for CAM-style maps, ``[3, H, W]`` for input gradients.
    """

    method: str
    layer: str
    target: int
    array: np.ndarray = field(repr=False)

    @property
    def key(self) -> MapKey:
        """This map's key in :attr:`ExplainResult.maps`."""
        return MapKey(self.method, self.layer, self.target)

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return tuple(self.array.shape)

    @property
    def size(self) -> tuple[int, int]:
        """Spatial size ``(height, width)``."""
        return (int(self.array.shape[-2]), int(self.array.shape[-1]))

    @property
    def is_gradient(self) -> bool:
        """True for 3-channel input-gradient maps (saliency, guided backprop, deconvnet, guided Grad-CAM)."""
        return self.array.ndim == 3

    def __array__(self, dtype: object = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None and not copy:
            return self.array
        return np.array(self.array, dtype=dtype, copy=True)  # type: ignore[call-overload,no-any-return]

    def __repr__(self) -> str:
        return f"Map(method={self.method!r}, layer={self.layer!r}, target={self.target}, shape={self.shape})"

    def _with(self, array: np.ndarray) -> Map:
        return Map(self.method, self.layer, self.target, _frozen(array))

    def upsample(self, size: tuple[int, int]) -> Map:
        """Bilinearly resized to ``size = (height, width)`` (numpy/PIL only); every channel alike."""
        return self._with(resize_array(self.array, size))

    def normalized(self) -> Map:
        """Min-max rescaled to [0, 1] over the whole map (all channels together); constant maps become 0."""
        return self._with(normalize_array(self.array))

    def reduce(self, how: Reduction = "abs_max") -> Map:
        """A 3-channel gradient map reduced to one channel ``[H, W]``; 2-D maps are returned unchanged.

        Args:
            how: ``"abs_max"`` (max over channels of ``|g|``, the usual saliency display), ``"positive"``
                (max over channels of ``max(g, 0)``), ``"negative"`` (max over channels of ``max(-g, 0)``) or
                ``"luminance"`` (BT.601 luma of ``|g|`` read as an RGB image).
        """
        a = self.array
        if a.ndim == 2:
            return self
        if how == "abs_max":
            out = np.abs(a).max(axis=0)
        elif how == "positive":
            out = np.maximum(a, 0.0).max(axis=0)
        elif how == "negative":
            out = np.maximum(-a, 0.0).max(axis=0)
        elif how == "luminance":
            out = np.tensordot(_LUMA[: a.shape[0]], np.abs(a), axes=1)
        else:
            raise ValueError(f"reduction must be abs_max, positive, negative or luminance, got {how!r}")
        return self._with(out)

    def heatmap(self, how: Reduction = "abs_max") -> np.ndarray:
        """A ``[H, W]`` map in [0, 1] ready for a colormap: reduced (gradient maps) and normalized."""
        return normalize_array(self.reduce(how).array)

    def rgb(self, sign: Sign = "all", percentile: float = 100.0) -> np.ndarray:
        """A 3-channel gradient map as an ``H x W x 3`` image in [0, 1], the usual way to look at guided backprop.

        Args:
            sign: ``"all"`` (zero is mid-grey, positive brighter, negative darker, per channel), ``"positive"``,
                ``"negative"`` (that part only, zero is black) or ``"absolute"`` (``|g|``). One scale for all
                three channels, so their balance is kept.
            percentile: The scale is this percentile of the magnitudes shown (100 = the maximum; 99.5 keeps a few
                extreme pixels from washing out the rest, values beyond it are clipped).
        """
        if self.array.ndim != 3:
            raise ValueError(f"rgb() needs a 3-channel gradient map; {self.method} is {self.shape}")
        if not 0.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        a = self.array

        def scale_of(values: np.ndarray) -> float:
            shown = values[values > 0]  # the percentile of what is drawn, not of the zeros around it
            return max(float(np.percentile(shown, percentile)), 1e-30) if shown.size else 1.0

        if sign == "all":
            out = 0.5 + a / (2.0 * scale_of(np.abs(a)))
        elif sign == "positive":
            out = np.maximum(a, 0.0) / scale_of(np.maximum(a, 0.0))
        elif sign == "negative":
            out = np.maximum(-a, 0.0) / scale_of(np.maximum(-a, 0.0))
        elif sign == "absolute":
            scale = scale_of(np.abs(a))
            out = np.abs(a) / scale
        else:
            raise ValueError(f"sign must be all, positive, negative or absolute, got {sign!r}")
        return np.clip(out, 0.0, 1.0).transpose(1, 2, 0).astype(np.float32)


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
        """
        a = np.asarray(array, dtype=np.float32)
        orig_h, orig_w = self.original_size
        box = self.crop
        if box.width <= 0 or box.height <= 0:
            raise ValueError(f"empty crop box {box}")
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
            KeyError: No map matches, or several do and ``layer``/``target`` must say which (the message lists
                what there is).
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
            raise KeyError(f"no map {want}; maps: {have}")
        raise KeyError(f"{len(found)} maps match {want}: give layer= and/or target=; maps: {have}")

    def to_original(self, array: np.ndarray | Map, *, fill: float = 0.0) -> np.ndarray:
        """Maps a map onto the original image's pixels; see :meth:`Geometry.to_original`."""
        if self.geometry is None:
            raise ValueError("the server sent no geometry for this image")
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


@dataclass(frozen=True)
class ModelEntry:
    """A model registered on the server (from ``models``)."""

    name: str
    url: str


# ---- decoding (protobuf stays here, at the edge) ----

_FLOAT_DTYPES: dict[int, np.dtype[Any]] = {explain_pb2.FLOAT32: np.dtype("<f4"), explain_pb2.FLOAT16: np.dtype("<f2")}


def decode_tensor(tensor: explain_pb2.Tensor, what: str, default: int = explain_pb2.FLOAT16) -> np.ndarray:
    """Decodes a contract ``Tensor`` into a float32 array of its declared shape.

    Raises:
        Internal: The data does not match the declared shape or encoding (a server bug, not the caller's).
    """
    shape = tuple(int(s) for s in tensor.shape)
    count = int(np.prod(shape)) if shape else 0
    encoding = tensor.encoding or default
    if not shape or count == 0:
        raise Internal(f"malformed response: {what} has empty shape {list(shape)}")
    if encoding in _FLOAT_DTYPES:
        dtype = _FLOAT_DTYPES[encoding]
        if len(tensor.data) != count * dtype.itemsize:
            raise Internal(
                f"malformed response: {what} has {len(tensor.data)} bytes for shape {list(shape)} "
                f"({dtype.itemsize} bytes per value)"
            )
        values = np.frombuffer(tensor.data, dtype=dtype).astype(np.float32).reshape(shape)
        if encoding == explain_pb2.FLOAT16 and tensor.scale not in (0.0, 1.0):
            values = values * np.float32(tensor.scale)  # maps outside float16's normal range travel scaled
        return values
    if encoding == explain_pb2.UINT8:
        if len(tensor.data) != count:
            raise Internal(f"malformed response: {what} has {len(tensor.data)} bytes for shape {list(shape)}")
        q = np.frombuffer(tensor.data, dtype=np.uint8).reshape(shape)
    elif encoding == explain_pb2.PNG:
        try:
            with PILImage.open(io.BytesIO(tensor.data)) as png:
                if png.format != "PNG":
                    raise OSError(f"{png.format} data")
                q = np.asarray(png.convert("RGB" if len(shape) == 3 else "L"))
        except (OSError, ValueError) as exc:
            raise Internal(f"malformed response: {what} is not a readable PNG ({exc})") from None
        if q.ndim == 3:
            q = q.transpose(2, 0, 1)
        if q.shape != shape:
            raise Internal(f"malformed response: {what} PNG is {list(q.shape)}, declared {list(shape)}")
    else:
        raise Internal(f"malformed response: {what} has unknown encoding {encoding}")
    lo, hi = float(tensor.value_min), float(tensor.value_max)
    return (lo + q.astype(np.float32) * ((hi - lo) / 255.0)).astype(np.float32)


def decode_model_info(response: explain_pb2.ExplainResponse, name: str) -> ModelInfo:
    """Builds :class:`ModelInfo` from a describe response."""
    info = response.model_info
    return ModelInfo(
        name=response.model_name or name,
        version=response.model_version,
        kind=info.kind,
        methods=tuple(info.methods),
        default_methods=tuple(info.default_methods),
        layers=tuple(info.layers),
        default_layers=tuple(info.default_layers),
        labels=tuple(info.labels),
        input_size=(int(info.input_height), int(info.input_width)),
        max_images=int(info.max_images),
        max_top_k=int(info.max_top_k),
        max_regions=int(info.max_regions),
        max_image_bytes=int(info.max_image_bytes),
        max_pixels=int(info.max_pixels),
        max_response_bytes=int(info.max_response_bytes),
        versions=types.MappingProxyType(dict(response.versions)),
    )


def _geometry(result: explain_pb2.ImageResult) -> Geometry | None:
    if not result.HasField("geometry"):
        return None
    g = result.geometry
    return Geometry(
        original_size=(int(g.original_height), int(g.original_width)),
        crop=Box(g.crop.x0, g.crop.y0, g.crop.x1, g.crop.y1),
        input_size=(int(g.input_height), int(g.input_width)),
    )


def decode_image_result(
    result: explain_pb2.ImageResult,
    index: int,
    response: explain_pb2.ExplainResponse,
    round_trip_ms: float,
) -> ExplainResult:
    """Builds one :class:`ExplainResult` (with its in-band error, if any) from an ``ImageResult``."""
    t = response.timing
    timing = Timing(
        decode_ms=float(t.decode_ms),
        explain_ms=float(t.explain_ms),
        encode_ms=float(t.encode_ms),
        batch_size=int(t.batch_size),
        round_trip_ms=round_trip_ms,
    )
    common = {
        "index": index,
        "id": result.id or str(index),
        "timing": timing,
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if result.HasField("error") and result.error.code:
        e = result.error
        return ExplainResult(
            predictions=(),
            maps=types.MappingProxyType({}),
            reconstruction=None,
            geometry=_geometry(result),
            error=from_code(e.code, e.message, e.field),
            **common,  # type: ignore[arg-type]
        )
    maps: dict[MapKey, Map] = {}
    for i, m in enumerate(result.maps):
        what = f"results[{index}].maps[{i}] ({m.method}, {m.layer!r}, {m.target})"
        array = decode_tensor(m.data, what)
        if array.ndim not in (2, 3):
            raise Internal(f"malformed response: {what} has {array.ndim} dimensions")
        key = MapKey(m.method, m.layer, int(m.target))
        if key in maps:
            raise Internal(f"malformed response: duplicate map {tuple(key)}")
        maps[key] = Map(key.method, key.layer, key.target, _frozen(array))
    reconstruction = None
    if result.HasField("reconstruction") and result.reconstruction.data:
        rec = decode_tensor(result.reconstruction, f"results[{index}].reconstruction")
        if rec.ndim == 3:
            rec = rec.transpose(1, 2, 0)
        reconstruction = _frozen(rec)
    predictions = tuple(
        Prediction(class_id=int(p.class_id), label=p.label, score=float(p.score), logit=float(p.logit))
        for p in result.predictions
    )
    return ExplainResult(
        predictions=predictions,
        maps=types.MappingProxyType(maps),
        reconstruction=reconstruction,
        geometry=_geometry(result),
        error=None,
        **common,  # type: ignore[arg-type]
    )


def decode_explain_response(
    payload: bytes, expected: int, start: int, round_trip_ms: float
) -> tuple[explain_pb2.ExplainResponse, list[ExplainResult]]:
    """Parses a ``PredictionResponse.prediction`` payload into per-image results.

    Raises:
        CamserveError: The whole request was rejected in band (the matching subclass), or the response cannot
            be read (Internal).
    """
    response = explain_pb2.ExplainResponse()
    try:
        response.ParseFromString(payload)
    except Exception as exc:  # protobuf raises DecodeError (or others across versions); all mean unreadable
        raise Internal(f"malformed response: not an ExplainResponse ({type(exc).__name__})") from None
    if response.HasField("error") and response.error.code:
        e = response.error
        raise from_code(e.code, e.message, e.field)
    if len(response.results) != expected:
        raise Internal(f"malformed response: {len(response.results)} results for {expected} images")
    results = [decode_image_result(r, start + i, response, round_trip_ms) for i, r in enumerate(response.results)]
    return response, results
