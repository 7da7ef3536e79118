"""What ``camserve explain`` writes per image: its line on the terminal and its files under ``--out``.

Per image, ``maps/<image>/`` gets every map as ``.npy`` (float32, as served) and ``.png`` (the picture the gallery
shows), feature maps as ``feature_<layer>_c<channel>_t<target>.npy``, consistency copies mapped back as
``consistency_<method>_<layer>_t<target>_<transform>.npy``, the VAE reconstruction as ``reconstruction.npy``; the
returned record (the image's ``summary()`` plus those file names) goes into ``summary.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from camserve import render
from camserve._files import slug
from camserve._results import ExplainResult

__all__ = ["result_line", "unique_names", "write_result"]


def unique_names(paths: Sequence[Path]) -> list[str]:
    """One output folder name per image: its stem, numbered when stems repeat."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = slug(p.stem)
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names


def result_line(path: Path, result: ExplainResult) -> str:
    if result.error is not None:
        return f"{path}: error {result.error.code}: {result.error.message}"
    top = result.top
    best = f"{top.label or top.class_id} {top.score:.3f}" if top else "explained"
    return f"{path}: {best} ({len(result.maps)} maps, {result.timing.round_trip_ms:.0f} ms)"


def write_result(
    folder: Path, path: Path, result: ExplainResult, regions: Sequence[tuple[int, int, int, int]], args: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {"image": str(path), **result.summary()}
    if result.error is not None:
        return record
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    vae = bool(regions) or result.reconstruction is not None or not result.predictions
    for m in result:
        whole = vae and m.target < 0  # a map of the whole image (VAE anomaly maps), not of a region
        stem = slug(f"{m.method}_{m.layer or 'input'}_" + ("image" if whole else f"{'r' if vae else 't'}{m.target}"))
        np.save(folder / f"{stem}.npy", m.array)
        boxes = [regions[m.target]] if vae and 0 <= m.target < len(regions) else []
        picture = render.render_map(
            path,
            m,
            geometry=result.geometry,
            on_original=not vae,
            cmap=args.cmap,
            size=args.size,
            boxes=boxes,
            gradients=args.gradients,
        )
        picture.save(folder / f"{stem}.png")
        rel = f"maps/{folder.name}/{stem}"
        files.append(
            {"method": m.method, "layer": m.layer, "target": m.target, "npy": f"{rel}.npy", "png": f"{rel}.png"}
        )
    for f in result.feature_maps:
        stem = slug(f"feature_{f.layer}_c{f.channel}_t{f.target}")
        np.save(folder / f"{stem}.npy", f.array)
        files.append({"feature_map": f.layer, "channel": f.channel, "npy": f"maps/{folder.name}/{stem}.npy"})
    for a in result.consistency:
        if a.mapped is None:
            continue
        stem = slug(f"consistency_{a.method}_{a.layer or 'input'}_t{a.target}_{a.transform}")
        np.save(folder / f"{stem}.npy", a.mapped)
        files.append(
            {
                "method": a.method,
                "layer": a.layer,
                "target": a.target,
                "transform": a.transform,
                "npy": f"maps/{folder.name}/{stem}.npy",
            }
        )
    if result.reconstruction is not None:
        np.save(folder / "reconstruction.npy", result.reconstruction)
        record["reconstruction"] = f"maps/{folder.name}/reconstruction.npy"
    record["files"] = files
    return record
