"""Training is deterministic: the same configuration twice gives bit-identical weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch

from model_store import data
from model_store.train import ClassifierConfig, VAEConfig, train_classifier, train_vae


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
