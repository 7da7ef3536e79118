"""The procedural shapes generator: determinism, split disjointness, ground truth that matches the drawing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from model_store import data
from model_store.data import _render_parts


def test_same_seed_same_image_different_seed_different_image() -> None:
    a, b = data.render(123), data.render(123)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.label == b.label and a.box == b.box
    c = data.render(124)
    assert not np.array_equal(a.image, c.image)


def test_make_batch_is_deterministic_and_equals_render() -> None:
    b1 = data.make_batch("val", 5, 4)
    b2 = data.make_batch("val", 5, 4)
    assert np.array_equal(b1.images, b2.images) and np.array_equal(b1.boxes, b2.boxes)
    one = data.render(data.split_seed("val", 7))
    assert np.array_equal(b1.images[2], one.image) and b1.labels[2] == one.label
    assert b1.images.shape == (4, 64, 64, 3) and b1.images.dtype == np.uint8


def test_splits_own_disjoint_seed_ranges() -> None:
    ranges = []
    for split, sid in data.SPLITS.items():
        lo, hi = data.split_seed(split, 0), data.split_seed(split, data.SPLIT_STRIDE - 1)
        assert (lo, hi) == (sid * data.SPLIT_STRIDE, (sid + 1) * data.SPLIT_STRIDE - 1)
        ranges.append((lo, hi))
    ranges.sort()
    for (_, hi), (lo, _) in itertools.pairwise(ranges):
        assert hi < lo
    seeds = {s: set(data.make_batch(s, 0, 20).seeds.tolist()) for s in data.SPLITS}
    assert (
        not (seeds["train"] & seeds["val"])
        and not (seeds["train"] & seeds["test"])
        and not (seeds["val"] & seeds["test"])
    )
    # and the same index renders different images in different splits
    assert not np.array_equal(data.make_batch("train", 0, 1).images, data.make_batch("test", 0, 1).images)


@pytest.mark.parametrize("index", [-1, data.SPLIT_STRIDE, 1.5, True])
def test_index_outside_split_range_is_refused(index: object) -> None:
    with pytest.raises(ValueError, match="index"):
        data.split_seed("train", index)  # type: ignore[arg-type]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        data.split_seed("training", 0)
    with pytest.raises(ValueError, match="count"):
        data.make_batch("train", 0, -1)
    with pytest.raises(ValueError, match="index"):
        data.make_batch("train", data.SPLIT_STRIDE - 2, 5)  # would run into the next split
    with pytest.raises(ValueError, match="size"):
        data.render(0, size=4)
    with pytest.raises(ValueError, match="seed"):
        data.render(-3)
    with pytest.raises(ValueError, match="uint8"):
        data.to_tensor(np.zeros((2, 8, 8, 3), np.float32))


def test_boxes_match_the_drawn_mask_and_the_object_is_visible() -> None:
    batch = data.make_batch("test", 1000, 80)
    for i in range(len(batch)):
        mask = batch.masks[i]
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == tuple(batch.boxes[i])
        x0, y0, x1, y1 = batch.boxes[i]
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert x1 - x0 >= 8 and y1 - y0 >= 8  # objects are never tiny
    # the mask is where the object was drawn: rendering without the object changes exactly the masked pixels a lot
    for seed in batch.seeds[:20]:
        with_obj, label, mask = _render_parts(int(seed), 64)
        without, label2, mask2 = _render_parts(int(seed), 64, draw_object=False)
        assert label == label2 and np.array_equal(mask, mask2)
        diff = np.linalg.norm(with_obj - without, axis=-1)
        assert diff[mask].mean() > 0.25  # clearly distinct colour from the background under it
        # outside the mask only the anti-aliased fringe (coverage < 0.5; up to ~2 px at the sharp tips of a star)
        assert diff[ndimage.distance_transform_edt(~mask) > 3].max() == 0.0


def test_all_classes_occur_roughly_uniformly() -> None:
    counts = np.bincount(data.make_batch("train", 0, 300).labels, minlength=len(data.SHAPE_CLASSES))
    assert len(data.SHAPE_CLASSES) >= 6 and counts.min() > 300 / len(data.SHAPE_CLASSES) * 0.6


def test_size_parameter_and_to_tensor() -> None:
    s = data.render(data.split_seed("train", 3), size=96)
    assert s.image.shape == (96, 96, 3) and s.mask.shape == (96, 96)
    t = data.to_tensor(s.image)
    assert t.shape == (1, 3, 96, 96) and t.dtype == torch.float32 and 0.0 <= float(t.min()) <= float(t.max()) <= 1.0
    assert torch.allclose(t[0, :, 10, 20] * 255, torch.from_numpy(s.image[10, 20]).float())
