"""VAE regions: boxes and masks in reconstruction pixels, validated with errors that name the field at fault.

A region's score is the sum of the reconstruction over its pixels and over all channels, so a region is fully
described by a binary ``[H, W]`` mask; a box is the common, compact case. Validation happens in two steps: the
*structure* (types, one entry per image, no empty lists) before any work, and the *geometry* (bounds, mask shape)
against the reconstruction size, which the explainer knows before its forward pass. This module is the one owner of
these rules and their messages: the server checks each region it decodes with :func:`check_region` too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeGuard

import torch
from torch import Tensor

from handlers.engine._device import to_device
from handlers.engine.errors import InvalidArgumentError

__all__ = [
    "Box",
    "Mask",
    "Region",
    "RegionLike",
    "RegionsArg",
    "check_region",
    "check_regions",
    "parse_regions",
    "region_masks",
]


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Box:
    """A half-open box ``[x0, x1) x [y0, y1)`` in reconstruction pixels (x = column, y = row)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def center(self) -> tuple[float, float]:
        """The box centre ``(x, y)`` in continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``)."""
        return ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)

    def grown(self, pixels: int, size: tuple[int, int]) -> Box:
        """The box grown by ``pixels`` on every side, clipped to an image of ``size = (H, W)``."""
        height, width = size
        return Box(
            max(0, self.x0 - pixels),
            max(0, self.y0 - pixels),
            min(width, self.x1 + pixels),
            min(height, self.y1 + pixels),
        )


@dataclass(frozen=True, eq=False)
class Mask:
    """A binary mask ``[H, W]`` (``torch.bool``) of the reconstruction; ``True`` = inside the region."""

    data: Tensor


Region: TypeAlias = Box | Mask
#: What callers may pass for one region: a :class:`Box`, ``(x0, y0, x1, y1)`` ints, a :class:`Mask`, or an ``[H, W]``
#: tensor of dtype bool or an integer dtype holding only 0 and 1.
RegionLike: TypeAlias = Box | Mask | Tensor | Sequence[int]
#: One item per image: a region, or a sequence of regions (counts may differ between images).
RegionsArg: TypeAlias = Sequence[RegionLike | Sequence[RegionLike]]


def _is_box_like(item: object) -> bool:
    return isinstance(item, Box) or (
        isinstance(item, Sequence) and not isinstance(item, (str, bytes)) and len(item) == 4 and all(map(_is_int, item))
    )


def _is_region_like(item: object) -> bool:
    return isinstance(item, (Mask, Tensor)) or _is_box_like(item)


def _structure(item: object, field: str) -> Region:
    """Turn one region-like value into a :class:`Box` or :class:`Mask` (types and ordering only, no bounds)."""
    if isinstance(item, Box):
        item = (item.x0, item.y0, item.x1, item.y1)
    if isinstance(item, (Mask, Tensor)):
        data = item.data if isinstance(item, Mask) else item
        if not isinstance(data, Tensor):
            raise InvalidArgumentError(f"mask data must be a tensor, got {type(data).__name__}", field=field)
        if data.ndim != 2:
            raise InvalidArgumentError(f"a mask must be [H, W], got shape {tuple(data.shape)}", field=field)
        if data.dtype != torch.bool:
            if data.is_floating_point() or data.is_complex():
                raise InvalidArgumentError(
                    f"a mask must be torch.bool (or an integer dtype holding 0/1), got {data.dtype}", field=field
                )
            if bool(((data != 0) & (data != 1)).any()):
                raise InvalidArgumentError("an integer mask may only hold 0 and 1", field=field)
            data = data != 0
        if not bool(data.any()):
            raise InvalidArgumentError("the mask is empty (selects no pixel)", field=field)
        return Mask(data.detach())
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence):
        raise InvalidArgumentError(
            f"a region must be a box (x0, y0, x1, y1) or an [H, W] mask, got {type(item).__name__}", field=field
        )
    if len(item) != 4:
        raise InvalidArgumentError(f"a box needs 4 coordinates (x0, y0, x1, y1), got {len(item)}", field=field)
    for name, value in zip(("x0", "y0", "x1", "y1"), item, strict=True):
        if not _is_int(value):
            raise InvalidArgumentError(f"box coordinate {name} must be an int, got {value!r}", field=f"{field}.{name}")
    x0, y0, x1, y1 = (int(v) for v in item)
    for lo, hi, a, b in (("x0", "x1", x0, x1), ("y0", "y1", y0, y1)):
        if b < a:
            raise InvalidArgumentError(
                f"box is inverted: {hi}={b} < {lo}={a} (boxes are (x0, y0, x1, y1), half-open)", field=f"{field}.{hi}"
            )
        if b == a:
            raise InvalidArgumentError(
                f"box is empty: {hi}={b} == {lo}={a} (half-open, so {hi} must exceed {lo})", field=f"{field}.{hi}"
            )
    return Box(x0, y0, x1, y1)


def parse_regions(regions: RegionsArg | None, batch: int) -> tuple[tuple[Region, ...], ...]:
    """Validate the structure of ``regions`` for a batch of ``batch`` images (bounds come later).

    Args:
        regions: One item per image; each item is a region or a non-empty sequence of regions.
        batch: The number of images.

    Returns:
        The regions of each image as :class:`Box` / :class:`Mask` objects.

    Raises:
        InvalidArgumentError: ``None``, the wrong number of items, an image with no regions, or a malformed region;
            ``field`` is ``"regions"``, ``"regions[i]"``, ``"regions[i][j]"`` or ``"regions[i][j].x1"``.
    """
    if regions is None:
        raise InvalidArgumentError("area methods need regions: one or more boxes or masks per image", field="regions")
    if isinstance(regions, (str, bytes, Tensor)) or not isinstance(regions, Sequence):
        raise InvalidArgumentError(
            f"regions must be a list with one item per image, got {type(regions).__name__}", field="regions"
        )
    if len(regions) != batch:
        raise InvalidArgumentError(
            f"{len(regions)} region items for {batch} images; give one item (a region or a list) per image",
            field="regions",
        )
    out: list[tuple[Region, ...]] = []
    for i, item in enumerate(regions):
        items: Sequence[object]
        if _is_region_like(item):
            items = (item,)
        elif isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
            items = item
        else:
            raise InvalidArgumentError(
                f"regions[{i}] must be a region or a list of regions, got {type(item).__name__}", field=f"regions[{i}]"
            )
        if not items:
            raise InvalidArgumentError(f"image {i} has no regions", field=f"regions[{i}]")
        out.append(tuple(_structure(r, f"regions[{i}][{j}]") for j, r in enumerate(items)))
    return tuple(out)


def check_region(region: RegionLike, size: tuple[int, int], field: str) -> Region:
    """One region, structure and bounds, against a reconstruction of ``size = (H, W)``.

    Args:
        region: A :class:`Box`, ``(x0, y0, x1, y1)`` ints, a :class:`Mask` or an ``[H, W]`` bool (or 0/1) tensor.
        size: The reconstruction ``(H, W)``.
        field: Where the region is in the caller's request; errors name it (and the coordinate: ``field.x1``).

    Raises:
        InvalidArgumentError: A malformed, inverted, empty or out-of-bounds box, or an empty or misshaped mask.
    """
    checked = _structure(region, field)
    _check_geometry(checked, size, field)
    return checked


def check_regions(regions: Sequence[Sequence[Region]], size: tuple[int, int]) -> None:
    """Check every region against the reconstruction size ``(H, W)``.

    Raises:
        InvalidArgumentError: A box coordinate outside ``[0, W]`` / ``[0, H]`` (field names the coordinate), or a
            mask whose shape is not ``(H, W)``.
    """
    for i, per_image in enumerate(regions):
        for j, region in enumerate(per_image):
            _check_geometry(region, size, f"regions[{i}][{j}]")


def _check_geometry(region: Region, size: tuple[int, int], field: str) -> None:
    height, width = size
    if isinstance(region, Mask):
        if tuple(region.data.shape) != (height, width):
            raise InvalidArgumentError(
                f"mask shape {tuple(region.data.shape)} does not match the reconstruction ({height}, {width})",
                field=field,
            )
        return
    for name, value, limit in (
        ("x0", region.x0, width),
        ("y0", region.y0, height),
        ("x1", region.x1, width),
        ("y1", region.y1, height),
    ):
        if not 0 <= value <= limit:
            axis = "width" if name[0] == "x" else "height"
            raise InvalidArgumentError(
                f"box {name}={value} is out of bounds: must be in [0, {limit}] (reconstruction {axis})",
                field=f"{field}.{name}",
            )


def region_masks(
    regions: Sequence[Region], size: tuple[int, int], *, dtype: torch.dtype, device: torch.device
) -> Tensor:
    """Stack regions into ``[R, 1, H, W]`` 0/1 masks (broadcast over channels, so the score sums all of them)."""
    height, width = size
    out = torch.zeros((len(regions), 1, height, width), dtype=dtype)
    for r, region in enumerate(regions):
        if isinstance(region, Box):
            out[r, 0, region.y0 : region.y1, region.x0 : region.x1] = 1
        else:
            out[r, 0] = region.data.to(device="cpu", dtype=dtype)
    return to_device(out, device)
