"""The style-shifted evaluation set: deterministic, ground truth that matches the drawing, never seen in training."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_store import data, shifted

ROOT = Path(__file__).resolve().parents[2]


def test_same_index_same_image_and_batches_equal_renders() -> None:
    a, b = shifted.render_shifted(7), shifted.render_shifted(7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.box == b.box
    assert not np.array_equal(a.image, shifted.render_shifted(8).image)
    batch = shifted.make_shifted_batch(5, 4)
    assert batch.images.shape == (4, 64, 64, 3) and batch.images.dtype == np.uint8
    assert np.array_equal(batch.images[2], a.image) and batch.seeds.tolist() == [5, 6, 7, 8]


def test_boxes_come_from_the_masks_and_every_class_occurs() -> None:
    batch = shifted.make_shifted_batch(0, 120)
    for mask, box in zip(batch.masks, batch.boxes, strict=True):
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(box)
        assert box[2] - box[0] >= 8 and box[3] - box[1] >= 8
    assert set(batch.labels.tolist()) == set(range(len(data.SHAPE_CLASSES)))


def test_differs_from_the_training_generator() -> None:
    """No shifted image equals a training image of the same index."""
    train = data.make_batch("train", 0, 50).images
    other = shifted.make_shifted_batch(0, 50).images
    assert not any(np.array_equal(a, b) for a, b in zip(train, other, strict=True))


def test_training_never_imports_the_shifted_set() -> None:
    for name in ("data.py", "train.py", "models.py"):
        tree = ast.parse((ROOT / "model_store" / name).read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom | ast.Import)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not any("shifted" in str(n) for n in imported), name
    code = "import sys, model_store.train; print('model_store.shifted' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: shifted.render_shifted(-1), "index"),
        (lambda: shifted.render_shifted(True), "index"),
        (lambda: shifted.render_shifted(0, size=8), "size"),
        (lambda: shifted.make_shifted_batch(-1, 2), "start"),
        (lambda: shifted.make_shifted_batch(0, 0), "count"),
        (lambda: shifted.make_shifted_batch(0, 1.5), "count"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_refused(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
