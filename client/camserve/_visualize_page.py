"""The page of activation-maximisation results: each optimised image, its score trace and what the model sees in it.

Written by ``camserve visualize`` and the demo; the layout (styles, figures, the atomic write) is the gallery's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from camserve._visualize import Visualization
from camserve.gallery import _Page, _page

__all__ = ["write_visualizations"]


def write_visualizations(
    items: Sequence[tuple[str, Visualization]],
    out_dir: str | Path,
    *,
    title: str = "activation maximisation",
    size: int = 192,
) -> Path:
    """Writes ``out_dir/index.html`` with one figure per ``(name, visualization)``; returns its path."""
    root = Path(out_dir)
    folder = root / "visualize"
    folder.mkdir(parents=True, exist_ok=True)
    page = _Page(folder, root)
    cells = []
    for name, v in items:
        h, w = v.image.shape[:2]
        scale = max(1, size // max(h, w))
        picture = Image.fromarray((np.clip(v.image, 0, 1) * 255 + 0.5).astype(np.uint8))
        picture = picture.resize((w * scale, h * scale), Image.Resampling.BILINEAR)
        top = v.predictions[0] if v.predictions else None
        seen = f"; model: {top.label or top.class_id} {top.score:.3f}" if top else ""
        caption = f"{name}: score {v.scores[0]:.3g} → {v.scores[-1]:.3g} in {v.steps} steps ({v.stopped}){seen}"
        cells.append(page.figure(picture, name, caption))
    body = (
        "<p class='legend'>Inputs optimised by gradient ascent (L2 decay, jitter, blur) to excite each target; the "
        "score never decreases.</p>"
        f"<section><div class='row'>{''.join(cells)}</div></section>"
    )
    return _page(root, title, body)
