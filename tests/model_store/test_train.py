"""Training is deterministic (the same configuration twice gives bit-identical weights), and the classifier's
training crops keep each object whole."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

from model_store import data, train
from model_store.train import ClassifierConfig, VAEConfig, _crop_around_boxes, train_classifier, train_vae


@pytest.fixture(autouse=True)
def _restore_torch_globals() -> Iterator[None]:
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng = torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_rng_state(rng)


@pytest.fixture(scope="module")
def tiny_train() -> data.Batch:
    return data.make_batch("train", 0, 64)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_classifier_training_is_deterministic(tiny_train: data.Batch) -> None:
    cfg = dataclasses.replace(ClassifierConfig(), train_size=64, val_size=8, test_size=8, epochs=1, batch_size=32)
    m1, e1 = train_classifier(cfg, tiny_train)
    m2, e2 = train_classifier(cfg, tiny_train)
    assert _same(m1, m2) and e1["metrics"] == e2["metrics"]
    m3, _ = train_classifier(dataclasses.replace(cfg, seed=cfg.seed + 1), tiny_train)
    assert not _same(m1, m3)  # the seed matters, so the comparison above can fail


def test_vae_training_is_deterministic(tiny_train: data.Batch) -> None:
    cfg = dataclasses.replace(VAEConfig(), train_size=64, val_size=8, test_size=8, epochs=1, batch_size=32)
    v1, e1 = train_vae(cfg, tiny_train)
    v2, e2 = train_vae(cfg, tiny_train)
    assert _same(v1, v2) and e1["metrics"] == e2["metrics"]
    # The acceptance check is model_store.locality's metric: one 8x8 box on each test image.
    locality = e1["metrics"]["area_saliency_locality_8x8"]
    growths = ("mass_within_0px", "mass_within_4px", "mass_within_8px", "mass_within_16px")
    assert set(locality) == {*growths, "com_distance_px", "regions"} and locality["regions"] == cfg.test_size
    assert all(0.0 <= locality[k] <= 1.0 for k in growths)


def test_training_crops_hold_the_whole_object_at_varying_places(tiny_train: data.Batch) -> None:
    masks = torch.from_numpy(tiny_train.masks).float()[:, None]
    boxes = torch.from_numpy(tiny_train.boxes)
    starts = []
    for seed in range(4):
        crops = _crop_around_boxes(masks, boxes, 48, torch.Generator().manual_seed(seed))
        assert crops.shape == (len(masks), 1, 48, 48)
        assert torch.equal(crops.sum((1, 2, 3)), masks.sum((1, 2, 3)))  # no object pixel cut off
        # where each window starts: the first row and column holding the top-left object pixel
        starts.append(
            [
                (int(b[1]) - int(c[0].any(1).nonzero()[0]), int(b[0]) - int(c[0].any(0).nonzero()[0]))
                for b, c in zip(boxes, crops, strict=True)
            ]
        )
    assert len({tuple(s) for s in starts}) == 4  # the place is random
    assert all(0 <= y <= 16 and 0 <= x <= 16 for s in starts for y, x in s)
    # a window as large as the image is the image
    same = _crop_around_boxes(masks, boxes, masks.shape[-1], torch.Generator().manual_seed(0))
    assert torch.equal(same, masks)
    for size in (0, masks.shape[-1] + 1):
        with pytest.raises(ValueError, match="crop size"):
            _crop_around_boxes(masks, boxes, size, torch.Generator())


def test_classifier_trains_on_crops_then_full_images(tiny_train: data.Batch, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[tuple[int, int]] = []

    class Recording(train.ShapesClassifier):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:
                sizes.append((x.shape[-1], int(x.is_contiguous(memory_format=torch.channels_last))))
            return super().forward(x)

    monkeypatch.setattr(train, "ShapesClassifier", Recording)
    cfg = dataclasses.replace(
        ClassifierConfig(), train_size=64, val_size=8, test_size=8, epochs=3, crop_epochs=2, batch_size=32
    )
    model, _ = train_classifier(cfg, tiny_train)
    assert sizes == [(48, 1)] * 4 + [(64, 1)] * 2  # two batches per epoch, channels-last
    assert all(p.is_contiguous() for p in model.parameters())  # handed back in the default memory format
