"""Locality of VAE area maps: how much of a region's input-gradient mass lies near the region.

For a convolutional VAE, rebuilding a small patch should draw mostly on the input around it. This module is the one
place that measures it: training's acceptance check (``model_store.train``), the localisation benchmark
(``python -m model_store.evaluate``) and the tests on the trained ``shapes-vae`` all call :func:`area_locality`, so
the manifest's and the README's numbers come from this code. It is evaluation code on top of the engine, not part of
the engine's API.

Definitions, for an area map ``g`` of box region ``R`` (an input gradient ``[C, H, W]``, or a layer map ``[h, w]``
upsampled bilinearly to the reconstruction's size):

* mass ``m = sum_c |g_c|`` ``[H, W]``;
* mass share at growth ``d``: ``sum(m inside R grown by d px on every side, clipped to the image) / sum(m)``;
* centre distance: Euclidean distance in pixels from the centre of mass of ``m`` (pixel ``(i, j)`` at
  ``(j + 0.5, i + 0.5)``) to the centre of ``R``.

A map with no mass at all (all zeros) scores share 0 and distance = the image diagonal, and is counted.
Two references: the *uniform* one is what a map spread evenly over the image would score on the same boxes; the
*mismatched* one scores each map against the box of the next region in the list (another random box) — a map that
does not depend on its region scores the same on both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from handlers.engine import Box, InvalidArgumentError, VAEExplainer, get_vae_method

__all__ = ["AREA_METHODS", "LocalityReport", "area_locality", "area_methods", "random_boxes", "region_locality"]

AREA_METHODS: tuple[str, ...] = ("area_saliency", "area_guided", "area_gradcam", "area_layercam")
"""The region methods :func:`area_methods` compares."""


@dataclass(frozen=True)
class LocalityReport:
    """Locality of a set of area maps (means over regions; per-region values kept for inspection).

    Attributes:
        growths: The growths ``d`` in pixels, in order.
        mass: Mean mass share inside the region grown by each ``d``.
        distance: Mean distance (px) from the map's centre of mass to the region centre.
        uniform_mass: Mean share a uniform map would score at each ``d`` (the grown box's area share).
        uniform_distance: Mean distance from the image centre (a uniform map's centre of mass) to the region centre.
        regions: Number of regions measured.
        empty_maps: Number of maps with no mass at all.
        per_region_mass: ``[N, len(growths)]`` float64.
        per_region_distance: ``[N]`` float64.
        method: The area method whose maps were scored (``layer`` its layer, ``""`` for an input-gradient method).
        mismatched_mass: Mean share at each ``d`` of the same maps scored against mismatched boxes (see the module
            doc); empty when not measured.
    """

    growths: tuple[int, ...]
    mass: tuple[float, ...]
    distance: float
    uniform_mass: tuple[float, ...]
    uniform_distance: float
    regions: int
    empty_maps: int
    per_region_mass: Tensor
    per_region_distance: Tensor
    method: str = "area_saliency"
    layer: str = ""
    mismatched_mass: tuple[float, ...] = ()

    def share(self, growth: int) -> float:
        """Mean mass share at ``growth`` px.

        Raises:
            InvalidArgumentError: ``growth`` was not measured.
        """
        if growth not in self.growths:
            raise InvalidArgumentError(f"growth {growth} was not measured; have {self.growths}", field="growth")
        return self.mass[self.growths.index(growth)]

    def metrics(self) -> dict[str, float]:
        """The means as flat named numbers (the manifest's ``area_saliency_locality_8x8`` entry)."""
        out = {f"mass_within_{d}px": m for d, m in zip(self.growths, self.mass, strict=True)}
        out["com_distance_px"] = self.distance
        out["regions"] = float(self.regions)
        return out

    def lines(self) -> list[str]:
        """Human-readable summary lines (used by the benchmark and the README)."""
        shares = ", ".join(
            f"+{d} px: {m:.3f} (uniform {u:.3f})"
            for d, m, u in zip(self.growths, self.mass, self.uniform_mass, strict=True)
        )
        name = f"{self.method} on {self.layer!r}" if self.layer else f"{self.method} |grad|"
        mismatched = ", ".join(f"+{d} px: {m:.3f}" for d, m in zip(self.growths, self.mismatched_mass, strict=False))
        return [
            f"{name} mass within the region grown by d, over {self.regions} regions: {shares}",
            *([f"  the same maps against mismatched regions: {mismatched}"] if mismatched else []),
            f"centre of mass to region centre: {self.distance:.2f} px (uniform {self.uniform_distance:.2f} px)"
            + (f"; {self.empty_maps} maps had no mass" if self.empty_maps else ""),
        ]


def random_boxes(count: int, size: int, image_size: tuple[int, int], generator: torch.Generator) -> list[Box]:
    """``count`` boxes of ``size x size`` pixels at uniformly random positions fully inside ``image_size = (H, W)``.

    Raises:
        InvalidArgumentError: ``size`` does not fit the image, or ``count < 0``.
    """
    height, width = image_size
    if count < 0 or not 0 < size <= min(height, width):
        raise InvalidArgumentError(f"cannot place {count} boxes of {size} px in {image_size}")
    xs = torch.randint(0, width - size + 1, (count,), generator=generator).tolist()
    ys = torch.randint(0, height - size + 1, (count,), generator=generator).tolist()
    return [Box(x, y, x + size, y + size) for x, y in zip(xs, ys, strict=True)]


def region_locality(maps: Tensor, boxes: Sequence[Box], growths: Sequence[int] = (0, 4, 8, 16)) -> LocalityReport:
    """Score input-gradient maps ``[N, C, H, W]`` (or ``[N, H, W]``) against their boxes (see the module doc).

    Raises:
        InvalidArgumentError: Shapes or counts do not match, or a negative growth.
    """
    if maps.ndim == 3:
        maps = maps.unsqueeze(1)
    if maps.ndim != 4 or maps.shape[0] != len(boxes) or not boxes:
        raise InvalidArgumentError(f"need maps [N, C, H, W] for {len(boxes)} boxes, got {tuple(maps.shape)}")
    if any(d < 0 for d in growths):
        raise InvalidArgumentError(f"growths must be >= 0, got {list(growths)}", field="growths")
    height, width = int(maps.shape[2]), int(maps.shape[3])
    mass = maps.detach().abs().sum(dim=1).double().cpu()  # [N, H, W]
    total = mass.sum(dim=(1, 2))
    empty = total <= 0
    safe = torch.where(empty, torch.ones_like(total), total)
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    com_x = (mass.sum(dim=1) * xs).sum(dim=1) / safe
    com_y = (mass.sum(dim=2) * ys).sum(dim=1) / safe
    centres = torch.tensor([b.center for b in boxes], dtype=torch.float64)
    dist = torch.hypot(com_x - centres[:, 0], com_y - centres[:, 1])
    dist = torch.where(empty, torch.full_like(dist, math.hypot(height, width)), dist)
    shares = torch.zeros((len(boxes), len(growths)), dtype=torch.float64)
    uniform = torch.zeros_like(shares)
    for n, box in enumerate(boxes):
        for j, d in enumerate(growths):
            g = box.grown(d, (height, width))
            shares[n, j] = mass[n, g.y0 : g.y1, g.x0 : g.x1].sum() / safe[n]
            uniform[n, j] = (g.x1 - g.x0) * (g.y1 - g.y0) / (height * width)
    shares[empty] = 0.0
    uniform_dist = torch.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2)
    return LocalityReport(
        growths=tuple(int(d) for d in growths),
        mass=tuple(float(v) for v in shares.mean(dim=0)),
        distance=float(dist.mean()),
        uniform_mass=tuple(float(v) for v in uniform.mean(dim=0)),
        uniform_distance=float(uniform_dist.mean()),
        regions=len(boxes),
        empty_maps=int(empty.sum()),
        per_region_mass=shares,
        per_region_distance=dist,
    )


def area_locality(
    explainer: VAEExplainer,
    images: Tensor,
    *,
    regions_per_image: int = 4,
    box_size: int = 8,
    growths: Sequence[int] = (0, 4, 8, 16),
    seed: int = 0,
    chunk: int = 8,
    method: str = "area_saliency",
    layer: str | None = None,
) -> LocalityReport:
    """Place random ``box_size`` boxes on each image, explain them with ``method`` and score the maps.

    Layer maps (``area_gradcam``, ``area_layercam``) are upsampled bilinearly to the reconstruction first. The report
    includes the mismatched-region reference (each map against the next region's box).

    Args:
        explainer: The VAE explainer.
        images: ``[N, C, H, W]`` images (e.g. held-out shapes images); ``N * regions_per_image`` regions in total.
        regions_per_image: Boxes per image (one explain call per ``chunk`` images explains all of them).
        box_size: Box side in reconstruction pixels.
        growths: Growths at which to report the mass share.
        seed: Seed of the box positions (a local ``torch.Generator``; the global RNG is not touched).
        chunk: Images per explain call.
        method: A region method (``rows == "regions"``) of :func:`~handlers.engine.vae_methods`.
        layer: Its layer, for a layer method; ``None`` = the explainer's default layer.

    Raises:
        InvalidArgumentError: Bad arguments (see :func:`random_boxes` and :meth:`VAEExplainer.explain`), or a method
            whose maps do not follow the regions (``latent_gradcam``).
    """
    if regions_per_image < 1 or chunk < 1:
        raise InvalidArgumentError("regions_per_image and chunk must be >= 1")
    spec = get_vae_method(method)
    if spec.rows != "regions":
        raise InvalidArgumentError(f"{method!r} does not explain regions", field="method")
    on_layer = spec.scope == "layer"
    if on_layer and layer is None:
        layer = explainer.default_layers[0]
    size = explainer.output_size((int(images.shape[2]), int(images.shape[3])))
    generator = torch.Generator().manual_seed(seed)
    boxes = [random_boxes(regions_per_image, box_size, size, generator) for _ in range(int(images.shape[0]))]
    layers = (layer,) if on_layer and layer is not None else None
    maps: list[Tensor] = []
    for start in range(0, int(images.shape[0]), chunk):
        part = boxes[start : start + chunk]
        results = explainer.explain(images[start : start + chunk], methods=(method,), regions=part, layers=layers)
        maps.extend(
            r.upsampled(method, layer if on_layer else "", j, size=size, mode="bilinear").cpu()
            for r in results
            for j in range(regions_per_image)
        )
    flat = [b for per in boxes for b in per]
    report = region_locality(torch.stack(maps), flat, growths)
    mismatched = region_locality(torch.stack(maps), flat[1:] + flat[:1], growths)
    return replace(report, method=method, layer=layer if on_layer and layer else "", mismatched_mass=mismatched.mass)


def area_methods(
    explainer: VAEExplainer, images: Tensor, methods: Sequence[str] = AREA_METHODS, layer: str | None = None
) -> dict[str, LocalityReport]:
    """:func:`area_locality` with its defaults for each of ``methods`` (layer methods on ``layer``, default the
    explainer's default layer): the same boxes for every method, each report with its mismatched-region reference."""
    return {m: area_locality(explainer, images, method=m, layer=layer) for m in methods}
