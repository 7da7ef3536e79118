"""Consistency checks: would the explanation survive a flipped, shifted or rotated image?

An explanation that follows the object should move with it. For every image, each requested transform is applied to
the input, the transformed copies are explained in one batch for the *same* targets as the original (the classes
explained on the original, not the copy's own top prediction), and each map is mapped back onto the original
geometry: flipped back, shifted back, rotated back (input resolution; CAM grids upsampled bilinearly first,
3-channel input gradients reduced to their channel max of ``|g|``). Agreement with the original map is measured on
the pixels that stayed inside the image under the transform:

* **Spearman rank correlation** of the two maps (Pearson correlation of their average ranks, ties shared);
* **IoU of the top regions**: the pixels at or above each map's top-``top_fraction`` value, never counting the map's
  floor (a ReLU map's zeros are no region).

Values are quantised to 2^16 levels of each map's range before ranking, so values equal up to float rounding rank
as ties rather than in an arbitrary order. A model whose explanations are exactly equivariant to a transform scores
1.0 for it (the horizontally flip-equivariant toy model in the tests does); shifts and rotations resample the input,
so even a translation-equivariant CNN scores a little below 1.0 for them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from handlers.engine._result import Agreement, Explanation
from handlers.engine.errors import InvalidArgumentError

__all__ = ["TRANSFORMS", "ConsistencySpec", "Transform", "check_consistency", "spearman", "top_iou"]

Transform = Literal["hflip", "shift", "rotate"]
TRANSFORMS: Final[tuple[Transform, ...]] = ("hflip", "shift", "rotate")
_LEVELS: Final = float(2**16)

#: Explains transformed images ``[N, C, H, W]`` for explicit per-image targets; one result per image.
ExplainFn = Callable[[Tensor, list[list[int]]], list[Explanation]]


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass(frozen=True)
class ConsistencySpec:
    """Which transforms a consistency check applies and how agreement is measured.

    Attributes:
        transforms: Any of ``"hflip"`` (mirror left-right), ``"shift"`` (move the content right and down) and
            ``"rotate"`` (counter-clockwise about the centre), each once.
        shift: The shift as a fraction of the input's width and height (at least one pixel), in ``(0, 0.5]``.
        angle: The rotation in degrees, in ``[-90, 90]``, not 0.
        top_fraction: The share of compared pixels whose region the IoU measures, in ``(0, 1)``.

    Raises:
        InvalidArgumentError: Naming the bad attribute (``consistency.transforms`` and so on).
    """

    transforms: tuple[Transform, ...] = TRANSFORMS
    shift: float = 0.125
    angle: float = 15.0
    top_fraction: float = 0.1

    def __post_init__(self) -> None:
        names = (self.transforms,) if isinstance(self.transforms, str) else tuple(self.transforms)
        if not names:
            raise InvalidArgumentError("transforms is empty", field="consistency.transforms")
        for i, name in enumerate(names):
            if name not in TRANSFORMS:
                raise InvalidArgumentError(
                    f"unknown transform {name!r}; available: {', '.join(TRANSFORMS)}",
                    field=f"consistency.transforms[{i}]",
                )
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"transforms repeat: {list(names)}", field="consistency.transforms")
        object.__setattr__(self, "transforms", names)
        if not _is_number(self.shift) or not 0.0 < float(self.shift) <= 0.5:
            raise InvalidArgumentError(f"shift must be in (0, 0.5], got {self.shift!r}", field="consistency.shift")
        if not _is_number(self.angle) or not -90.0 <= float(self.angle) <= 90.0 or float(self.angle) == 0.0:
            raise InvalidArgumentError(
                f"angle must be in [-90, 90] degrees and not 0, got {self.angle!r}", field="consistency.angle"
            )
        if not _is_number(self.top_fraction) or not 0.0 < float(self.top_fraction) < 1.0:
            raise InvalidArgumentError(
                f"top_fraction must be in (0, 1), got {self.top_fraction!r}", field="consistency.top_fraction"
            )

    def offsets(self, size: tuple[int, int]) -> tuple[int, int]:
        """The shift ``(dy, dx)`` in pixels for an input of ``size`` ``(H, W)``."""
        height, width = size
        return max(1, round(self.shift * height)), max(1, round(self.shift * width))


# ---------------------------------------------------------------------------------------------- geometry
def _rotation(angle: float, size: tuple[int, int], device: torch.device) -> Tensor:
    """``affine_grid``'s ``[1, 2, 3]`` matrix: output pixel p samples input at R(angle) p, in pixel units."""
    height, width = size
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    # Normalised coordinates scale x by 2/W and y by 2/H: conjugate so the rotation is one in pixels.
    m = [[c, -s * height / width, 0.0], [s * width / height, c, 0.0]]
    return torch.tensor([m], dtype=torch.float32, device=device)


def _rotate(t: Tensor, angle: float) -> Tensor:
    """``t`` ``[N, C, H, W]`` with each output pixel sampled at the input rotated by ``angle`` (zeros outside)."""
    size = (int(t.shape[-2]), int(t.shape[-1]))
    theta = _rotation(angle, size, t.device).expand(t.shape[0], 2, 3)
    grid = F.affine_grid(theta.to(t.dtype), list(t.shape), align_corners=False)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def apply_transform(x: Tensor, transform: Transform, spec: ConsistencySpec) -> Tensor:
    """The transformed batch ``[B, C, H, W]`` (zeros, the normalised mean colour, where nothing moved in)."""
    if transform == "hflip":
        return x.flip(-1)
    if transform == "shift":
        dy, dx = spec.offsets((int(x.shape[-2]), int(x.shape[-1])))
        out = torch.zeros_like(x)
        out[..., dy:, dx:] = x[..., : x.shape[-2] - dy, : x.shape[-1] - dx]
        return out
    return _rotate(x, spec.angle)


def map_back(m: Tensor, transform: Transform, spec: ConsistencySpec) -> tuple[Tensor, Tensor]:
    """A map ``[H, W]`` of a transformed image in the original image's geometry, and where that is defined.

    Returns:
        ``(mapped, valid)``: the map (0 where undefined) and a boolean ``[H, W]`` of the original's pixels whose
        content stayed inside the transformed image.
    """
    height, width = int(m.shape[-2]), int(m.shape[-1])
    if transform == "hflip":
        return m.flip(-1), torch.ones_like(m, dtype=torch.bool)
    if transform == "shift":
        dy, dx = spec.offsets((height, width))
        mapped = torch.zeros_like(m)
        valid = torch.zeros_like(m, dtype=torch.bool)
        mapped[: height - dy, : width - dx] = m[dy:, dx:]
        valid[: height - dy, : width - dx] = True
        return mapped, valid
    # The copy's pixel p shows the original at R(angle) p; so the original's q is at R(-angle) q in the copy.
    mapped = _rotate(m[None, None], -spec.angle)[0, 0]
    theta = _rotation(-spec.angle, (height, width), m.device)
    grid = F.affine_grid(theta, [1, 1, height, width], align_corners=False)[0]
    # Inside the copy with a pixel's margin, and two pixels away from the original's border: bilinear samples there
    # never blend in the zeros around either picture (the copy's border pixels sampled the original's edge).
    valid = (grid[..., 0].abs() <= 1.0 - 3.0 / width) & (grid[..., 1].abs() <= 1.0 - 3.0 / height)
    frame = torch.zeros_like(valid)
    frame[2 : height - 2, 2 : width - 2] = True
    valid &= frame
    return torch.where(valid, mapped, torch.zeros_like(mapped)), valid


# ---------------------------------------------------------------------------------------------- agreement
def _quantised(v: Tensor) -> Tensor:
    lo, hi = v.min(), v.max()
    if not bool(hi > lo):
        return torch.zeros_like(v, dtype=torch.float64)
    return torch.round((v.double() - float(lo)) / (float(hi) - float(lo)) * _LEVELS)


def _ranks(q: Tensor) -> Tensor:
    """Average 1-based ranks (ties share the mean of their ranks)."""
    _, inverse, counts = torch.unique(q, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    average: Tensor = (ends - (counts.double() - 1.0) / 2.0)[inverse]
    return average


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation of two equally long 1-D tensors; NaN when either is constant."""
    qa, qb = _quantised(a), _quantised(b)
    ra, rb = _ranks(qa), _ranks(qb)
    if torch.equal(ra, rb) and bool(qa.max() > 0) and bool(qb.max() > 0):
        return 1.0  # the same order: exactly 1, not 1 up to the rounding of the sums below
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return max(-1.0, min(1.0, float((ra * rb).sum()) / denom)) if denom > 0 else math.nan


def _top_region(v: Tensor, fraction: float) -> Tensor:
    q = _quantised(v)
    k = max(1, math.ceil(fraction * int(q.numel())))
    kth = q.topk(k).values[-1]
    return (q >= kth) & (q > q.min())


def top_iou(a: Tensor, b: Tensor, fraction: float) -> float:
    """IoU of the top-``fraction`` regions of two equally long 1-D tensors; NaN when neither has one."""
    ra, rb = _top_region(a, fraction), _top_region(b, fraction)
    union = int((ra | rb).sum())
    return int((ra & rb).sum()) / union if union else math.nan


def _as_image(m: Tensor, size: tuple[int, int]) -> Tensor:
    """A map as one ``[H, W]`` picture at the input size: channel max of |g| for 3-channel maps, else upsampled."""
    if m.ndim == 3:
        m = m.abs().amax(dim=0)
    if tuple(m.shape) != size:
        m = F.interpolate(m[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0]
    return m.float()


def check_consistency(
    explain: ExplainFn, x: Tensor, results: Sequence[Explanation], spec: ConsistencySpec
) -> list[Explanation]:
    """``results`` with :attr:`Explanation.consistency` filled in: every map against every transform.

    Args:
        explain: Explains a batch of transformed images for given targets (the same methods and layers).
        x: The original images ``[B, C, H, W]`` the results are of.
        results: Their explanations, one per image.
        spec: The transforms and the agreement measure.
    """
    batch = int(x.shape[0])
    size = (int(x.shape[-2]), int(x.shape[-1]))
    copies = torch.cat([apply_transform(x, t, spec) for t in spec.transforms])  # transform-major
    targets = [list(r.targets) for r in results] * len(spec.transforms)
    transformed = explain(copies, targets)
    out: list[Explanation] = []
    with torch.no_grad():
        for i, result in enumerate(results):
            agreements: list[Agreement] = []
            for key, values in result.maps.items():
                original = _as_image(values, size)
                for ti, transform in enumerate(spec.transforms):
                    other = _as_image(transformed[ti * batch + i].maps[key], size)
                    mapped, valid = map_back(other, transform, spec)
                    a, b = original[valid], mapped[valid]
                    agreements.append(
                        Agreement(
                            key=key,
                            transform=transform,
                            spearman=spearman(a, b),
                            iou=top_iou(a, b, spec.top_fraction),
                            coverage=float(valid.float().mean()),
                            mapped=mapped,
                        )
                    )
            out.append(dataclasses.replace(result, consistency=tuple(agreements)))
    return out
