"""The procedural shapes generator: determinism, split disjointness, ground truth that matches the drawing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage

from model_store import _textures, data
from model_store.data import _coverage, _object_canvas, _paint, _render_parts


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
        # outside the mask only the anti-aliased fringe (coverage < 0.5; ~2 px at a star's tips) and the drop shadow
        # (offset <= 4 px, blurred <= 4 px), both then blurred with the image (<= 2 px)
        assert diff[ndimage.distance_transform_edt(~mask) > 11].max() == 0.0


def test_all_classes_occur_roughly_uniformly() -> None:
    counts = np.bincount(data.make_batch("train", 0, 300).labels, minlength=len(data.SHAPE_CLASSES))
    assert len(data.SHAPE_CLASSES) >= 6 and counts.min() > 300 / len(data.SHAPE_CLASSES) * 0.6


def test_size_parameter_and_to_tensor() -> None:
    s = data.render(data.split_seed("train", 3), size=96)
    assert s.image.shape == (96, 96, 3) and s.mask.shape == (96, 96)
    t = data.to_tensor(s.image)
    assert t.shape == (1, 3, 96, 96) and t.dtype == torch.float32 and 0.0 <= float(t.min()) <= float(t.max()) <= 1.0
    assert torch.allclose(t[0, :, 10, 20] * 255, torch.from_numpy(s.image[10, 20]).float())


def test_every_background_family_occurs_and_stays_in_range() -> None:
    seen: set[str] = set()
    for i in range(120):
        img, family = _textures.background(np.random.default_rng(i), 48)
        assert img.shape == (48, 48, 3) and img.dtype == np.float32 and 0.0 <= img.min() <= img.max() <= 1.0
        seen.add(family)
    assert seen == set(_textures.FAMILY_WEIGHTS) and sum(_textures.FAMILY_WEIGHTS.values()) == pytest.approx(1.0)


def test_hard_edged_backgrounds_have_strong_edges() -> None:
    # the "bands" family is the strong-edge case the training set must hold: neighbouring pixels differ a lot
    steps = []
    for i in range(400):
        rng = np.random.default_rng(i)
        img, family = _textures.background(rng, 64)
        if family == "bands":
            steps.append(float(np.abs(np.diff(img, axis=1)).max()))
    assert len(steps) > 40 and np.median(steps) > 0.2


def _jitter(saturation: float = 1.0) -> data._ColourJitter:
    jitter = data._ColourJitter(np.random.default_rng(0))
    jitter.gamma, jitter.saturation, jitter.contrast, jitter.brightness = 1.0, saturation, 1.0, 0.0
    return jitter


def test_colour_jitter_identity_and_grey() -> None:
    rgb = np.random.default_rng(1).uniform(0, 1, (10, 10, 3)).astype(np.float32)
    assert np.allclose(_jitter()(rgb), rgb, atol=1e-6)
    grey = _jitter(saturation=0.0)(rgb)
    assert np.allclose(grey[..., 0], grey[..., 1]) and np.allclose(grey[..., 1], grey[..., 2])


@pytest.mark.parametrize("style", data.STYLES)
def test_each_style_paints_inside_the_silhouette_and_stands_out(style: str) -> None:
    hi = _object_canvas("circle", 64, 32.0, 32.0, 14.0, 0.0)
    silhouette = _coverage(hi, 64)
    under = np.full((int((silhouette >= 0.5).sum()), 3), 0.5, np.float32)  # a mid-grey background under it
    ink, paint = _paint(np.random.default_rng(3), style, hi, 14.0, under, _jitter())
    assert ink.shape == (64, 64) and paint.shape == (64, 64, 3) and np.all(ink <= silhouette + 1e-6)
    drawn = ink >= 0.5
    assert np.percentile(np.linalg.norm(paint[drawn] - 0.5, axis=-1), 10) >= 0.29  # _MIN_CONTRAST, float tolerance
    if style == "outlined":  # a band along the contour, the centre left to the background
        assert ink[32, 32] == 0.0 and 0.15 < drawn.sum() / (silhouette >= 0.5).sum() < 0.6
    else:
        assert np.array_equal(drawn, silhouette >= 0.5)
    flat = paint[drawn].reshape(-1, 3)
    spread = float(np.linalg.norm(flat.max(0) - flat.min(0)))
    if style in ("two_tone", "gradient"):  # two colours, both standing out: far apart
        assert spread > 0.25
    elif style == "textured":  # stripes of a tint: visible, but the fill stays one region
        assert spread > 0.03


def test_occluders_cut_the_mask_and_every_image_keeps_a_visible_object() -> None:
    sizes = []
    for i in range(60):
        _, _, mask = _render_parts(data.split_seed("val", i), 64)
        sizes.append(int(mask.sum()))
    assert min(sizes) >= 20  # never occluded or outlined away
