"""Defect images and the pixel-AUROC benchmark: the AUROC equals a brute-force pair count, defects are deterministic
and their masks are exactly the pixels they changed, and the committed VAE's anomaly maps beat chance."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_store import anomaly, data, defects, zoo


def _brute_force(scores: np.ndarray, labels: np.ndarray) -> float:
    pos = scores[labels]
    neg = scores[~labels]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auroc_equals_the_pair_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    labels = rng.random(n) < rng.uniform(0.1, 0.9)
    labels[:2] = (True, False)
    scores = rng.integers(0, 6, n).astype(np.float64) if seed % 2 else rng.normal(size=n) + labels * seed / 3
    assert anomaly.pixel_auroc(scores, labels) == pytest.approx(_brute_force(scores, labels), abs=1e-12)


def test_auroc_extremes_and_errors() -> None:
    y = np.array([[False, True], [False, True]])
    assert anomaly.pixel_auroc(np.array([[0.0, 1.0], [0.1, 2.0]]), y) == 1.0
    assert anomaly.pixel_auroc(np.array([[3.0, 1.0], [2.0, 0.0]]), y) == 0.0
    assert anomaly.pixel_auroc(np.ones((2, 2)), y) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        anomaly.pixel_auroc(np.ones(3), np.zeros(3, bool))
    with pytest.raises(ValueError, match="differ in shape"):
        anomaly.pixel_auroc(np.ones(3), np.ones(4, bool))
    with pytest.raises(ValueError, match="finite"):
        anomaly.pixel_auroc(np.array([0.0, np.nan]), np.array([True, False]))


def test_defects_are_deterministic_and_masks_are_the_changed_pixels() -> None:
    batch = defects.make_defect_batch(9)
    again = defects.make_defect_batch(9)
    for name in ("images", "clean", "masks", "kinds", "seeds"):
        assert np.array_equal(getattr(batch, name), getattr(again, name)), name
    clean = data.make_batch("test", defects.DEFECT_START, 9)
    assert np.array_equal(batch.clean, clean.images) and np.array_equal(batch.seeds, clean.seeds)
    assert list(batch.kinds) == [0, 1, 2] * 3
    assert np.array_equal(batch.masks, np.any(batch.images != batch.clean, axis=-1))
    assert (batch.masks.sum(axis=(1, 2)) >= 12).all()
    missing = batch.kinds == defects.DEFECT_KINDS.index("missing")
    assert not (batch.masks[missing] & ~clean.masks[missing]).any()  # a missing part is cut out of the object only
    other = defects.make_defect_batch(3, start=defects.DEFECT_START + 3)
    assert np.array_equal(other.images, batch.images[3:6])  # a defect image depends on its index, not the call
    assert not np.array_equal(defects.make_defect_batch(3, start=5).images, batch.images[:3])


def test_defect_errors() -> None:
    clean = data.make_batch("test", 0, 1)
    with pytest.raises(ValueError, match="unknown defect kind"):
        defects.add_defect(clean.images[0], clean.masks[0], "dent", 0)
    with pytest.raises(ValueError, match="count"):
        defects.make_defect_batch(-1)


def test_committed_vae_maps_beat_chance_and_the_engine_matches_the_baseline() -> None:
    # 24 images (8 of each kind), measured: reconstruction error 0.839 (scratch 0.976, blob 0.950, missing part
    # 0.661); anomaly_latent on encoder.1 0.503, about chance like every layer since the VAE learned the varied
    # generator (0.49-0.50 on 300 images), so it is reported, not asserted.
    report = anomaly.anomaly_report(zoo.build("shapes-vae"), images=24, layers=("encoder.1",))
    assert report.overall["anomaly_recon_error"] > 0.8
    assert "anomaly_latent @ encoder.1" in report.overall
    assert report.overall["anomaly_recon_error"] == pytest.approx(report.overall[anomaly.BASELINE], abs=1e-4)
    assert all(report.per_kind["anomaly_recon_error"][k] > 0.6 for k in defects.DEFECT_KINDS)
    assert len(report.lines()) == 2 + 3 + 1


def test_sheet_writes_a_picture(tmp_path: Path) -> None:
    path = tmp_path / "sheet" / "anomaly.png"
    anomaly.anomaly_sheet(zoo.build("shapes-vae"), path, per_kind=1)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.height > im.width > 100  # 5 rows, 3 columns


def test_report_needs_one_image_per_kind() -> None:
    with pytest.raises(ValueError, match="one per defect kind"):
        anomaly.anomaly_report(zoo.build("shapes-vae"), images=2)
