"""Activation maximisation on the trained demo classifier: monotone ascent, budgets, deadline, seeds, bad specs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from handlers.engine import InvalidArgumentError, NotFoundError, VisualizeSpec, visualize
from model_store import zoo

from .conftest import Snapshot

SIZE = (64, 64)
BOUNDS = (torch.zeros(3), torch.ones(3))  # the demo classifier's inputs are pixels in [0, 1]


@pytest.fixture(scope="module")
def demo() -> Iterator[nn.Module]:
    yield zoo.build("shapes-classifier")


@pytest.mark.parametrize("target", [0, 3])
def test_the_class_score_rises_monotonically_within_the_budget(demo: nn.Module, target: int) -> None:
    before = Snapshot.of(demo)
    v = visualize(demo, VisualizeSpec(target=target, steps=60), SIZE, bounds=BOUNDS)
    before.assert_same(demo)
    assert v.steps == 60 and v.stopped == "steps"
    assert all(b >= a for a, b in zip(v.scores, v.scores[1:], strict=False)), v.scores
    assert v.scores[-1] > v.scores[0] + 5.0  # logits: the class is strongly excited
    assert int(v.logits.argmax()) == target
    with torch.no_grad():  # the reported score is the model's own logit for the returned image
        assert float(demo(v.image[None])[0, target]) == pytest.approx(v.scores[-1], rel=1e-4, abs=1e-4)
    assert float(v.image.min()) >= 0.0 and float(v.image.max()) <= 1.0


def test_a_channel_can_be_maximised(demo: nn.Module) -> None:
    # channel 2 (0.12 -> 1.99 in 40 steps): the trained model's channel 3 of layer2 barely moves (0.16 -> 0.24)
    v = visualize(demo, VisualizeSpec(layer="layer2", channel=2, steps=40), SIZE, bounds=BOUNDS)
    assert all(b >= a for a, b in zip(v.scores, v.scores[1:], strict=False))
    assert v.scores[-1] > 2 * v.scores[0]


def test_the_deadline_stops_the_run(demo: nn.Module) -> None:
    ticks = iter(range(10_000))
    v = visualize(demo, VisualizeSpec(target=1, steps=1000, deadline=5.0), SIZE, clock=lambda: float(next(ticks)))
    assert v.stopped == "deadline" and v.steps == 4  # the clock reads 1, 2, 3, 4 before steps, 5 stops it
    start = time.monotonic()
    v = visualize(demo, VisualizeSpec(target=1, steps=1_000_000, deadline=0.3), SIZE, bounds=BOUNDS)
    took = time.monotonic() - start
    assert v.stopped == "deadline" and 0 < v.steps < 1_000_000
    assert took < 0.3 + 0.5  # at most one step (a few ms here) past the deadline, with room for a loaded machine
    assert v.elapsed == pytest.approx(took, abs=0.05)


def test_a_seed_reproduces_a_run_and_a_result_seeds_the_next(demo: nn.Module) -> None:
    spec = VisualizeSpec(target=2, steps=20, seed=7)
    a = visualize(demo, spec, SIZE, bounds=BOUNDS)
    b = visualize(demo, spec, SIZE, bounds=BOUNDS)
    assert torch.equal(a.image, b.image) and a.scores == b.scores
    c = visualize(demo, VisualizeSpec(target=2, steps=20, seed=8), SIZE, bounds=BOUNDS)
    assert not torch.equal(a.image, c.image)
    more = visualize(demo, spec, SIZE, bounds=BOUNDS, init=a.image)
    assert more.scores[0] == pytest.approx(a.scores[-1], rel=1e-5) and more.scores[-1] >= a.scores[-1]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "target"),
        ({"target": 1, "layer": "layer2", "channel": 0}, "target"),
        ({"target": -1}, "target"),
        ({"layer": "layer2"}, "channel"),
        ({"layer": "", "channel": 0}, "layer"),
        ({"target": 1, "steps": 0}, "steps"),
        ({"target": 1, "lr": 0.0}, "lr"),
        ({"target": 1, "lr": float("nan")}, "lr"),
        ({"target": 1, "l2": 1.0}, "l2"),
        ({"target": 1, "jitter": -1}, "jitter"),
        ({"target": 1, "blur_every": 1.5}, "blur_every"),
        ({"target": 1, "blur_sigma": 0}, "blur_sigma"),
        ({"target": 1, "seed": -3}, "seed"),
        ({"target": 1, "deadline": 0}, "deadline"),
    ],
)
def test_bad_specs_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        VisualizeSpec(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_bad_targets_for_this_model(demo: nn.Module) -> None:
    for spec, field in (
        (VisualizeSpec(target=99, steps=1), "target"),
        (VisualizeSpec(layer="layer2", channel=999, steps=1), "channel"),
        (VisualizeSpec(layer="fc", channel=0, steps=1), "layer"),
    ):
        with pytest.raises(InvalidArgumentError) as info:
            visualize(demo, spec, SIZE)
        assert info.value.field == field
    with pytest.raises(NotFoundError):
        visualize(demo, VisualizeSpec(layer="layer9", channel=0, steps=1), SIZE)
    with pytest.raises(InvalidArgumentError) as info:
        visualize(demo, VisualizeSpec(target=1, steps=1), SIZE, init=torch.zeros(3, 8, 8))
    assert info.value.field == "init"
