"""Explanation maps as numpy arrays: the :class:`Map` value, its key, and the array arithmetic maps are made of.

Conventions: sizes are ``(height, width)`` like numpy shapes; maps keep the contract's layout (``[H, W]`` for
CAM-style maps, ``[3, H, W]`` for input gradients); operations return new float32 arrays and never touch their
input. Arguments the helpers cannot use raise :class:`~camserve.errors.InvalidArgument`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image as PILImage

from camserve.errors import InvalidArgument

Reduction = Literal["abs_max", "positive", "negative", "luminance"]
Sign = Literal["all", "positive", "negative", "absolute"]

# ITU-R BT.601 luma weights, the usual grey conversion (PIL's "L" mode uses the same).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def frozen(array: np.ndarray) -> np.ndarray:
    """A contiguous float32 array that cannot be written (results are shared between threads)."""
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


def check_map_array(array: object) -> np.ndarray:
    """``array`` as a float32 ``[H, W]`` or ``[C, H, W]`` array with at least one value.

    Raises:
        InvalidArgument: Any other shape, or no values.
    """
    a = np.asarray(array, dtype=np.float32)
    _check_shape(a.shape)
    return a


def _check_shape(shape: tuple[int, ...]) -> None:
    if len(shape) not in (2, 3) or 0 in shape:
        raise InvalidArgument(f"a map is a non-empty [H, W] or [C, H, W] array, got shape {shape}", field="array")


def resize_array(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a ``[H, W]`` or ``[C, H, W]`` float array to ``size = (height, width)``."""
    height, width = check_size(size)
    a = check_map_array(array)
    if a.ndim == 2:
        return _resize_plane(a, height, width)
    return np.stack([_resize_plane(p, height, width) for p in a])


def check_size(size: tuple[int, int]) -> tuple[int, int]:
    """Validates a ``(height, width)`` argument of positive integers.

    Raises:
        InvalidArgument: Not two numbers, or not both positive.
    """
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InvalidArgument(f"size must be (height, width), got {size!r}", field="size") from None
    if height < 1 or width < 1:
        raise InvalidArgument(f"size must be positive, got {size!r}", field="size")
    return height, width


def normalize_array(array: np.ndarray) -> np.ndarray:
    """Min-max rescales to [0, 1]; a constant (or empty) array becomes all zeros (nothing stands out)."""
    a = np.asarray(array, dtype=np.float32)
    if a.size == 0:
        return np.zeros_like(a)
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

    How a map is shown follows from its shape alone: ``[H, W]`` maps (the CAM family, area Grad-CAM) are heat over
    the image; ``[3, H, W]`` maps are input gradients (:attr:`is_gradient`), reduced to one channel or drawn as
    RGB (:meth:`reduce`, :meth:`rgb`).

    Attributes:
        method: Method name, e.g. ``"gradcam"``.
        layer: Dotted module name; ``""`` for methods computed at the input (saliency, guided backprop, ...).
        target: The class id explained (classifiers) or the region's index (VAEs).
        array: float32, read-only: ``[H, W]`` for CAM-style maps, ``[3, H, W]`` for input gradients.
        completeness_error: Integrated Gradients: ``|sum of the map - (score(image) - score(baseline))|`` relative
            to the score gap, as the server computed it (raise ``steps`` when it is large); ``None`` otherwise.

    Raises:
        InvalidArgument: ``array`` is not a non-empty ``[H, W]`` or ``[C, H, W]`` numpy array.
    """

    method: str
    layer: str
    target: int
    array: np.ndarray = field(repr=False)
    completeness_error: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.array, np.ndarray):
            raise InvalidArgument(f"a map's array is a numpy array, got {type(self.array).__name__}", field="array")
        _check_shape(self.array.shape)

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
        return Map(self.method, self.layer, self.target, frozen(array), self.completeness_error)

    def upsample(self, size: tuple[int, int]) -> Map:
        """Bilinearly resized to ``size = (height, width)`` (numpy/PIL only); every channel alike.

        Raises:
            InvalidArgument: ``size`` is not two positive integers.
        """
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

        Raises:
            InvalidArgument: A gradient map and ``how`` is none of these.
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
            raise InvalidArgument(
                f"reduction must be abs_max, positive, negative or luminance, got {how!r}", field="reduction"
            )
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

        Raises:
            InvalidArgument: A 2-D map, a ``sign`` not listed, or a ``percentile`` outside (0, 100].
        """
        if self.array.ndim != 3:
            raise InvalidArgument(f"rgb() needs a 3-channel gradient map; {self.method} is {self.shape}", field="map")
        if not 0.0 < percentile <= 100.0:
            raise InvalidArgument(f"percentile must be in (0, 100], got {percentile}", field="percentile")
        if sign not in ("all", "positive", "negative", "absolute"):
            raise InvalidArgument(f"sign must be all, positive, negative or absolute, got {sign!r}", field="sign")
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
        else:
            out = np.abs(a) / scale_of(np.abs(a))
        return np.clip(out, 0.0, 1.0).transpose(1, 2, 0).astype(np.float32)
