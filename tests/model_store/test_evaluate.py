"""The localisation metrics and the explanation sanity check (Adebayo et al. 2018)."""

from __future__ import annotations

import math

import pytest
import torch

from handlers.engine import Explanation, MapKey
from model_store import data, zoo
from model_store.evaluate import EVAL_START, energy_in_box, heatmap, pointing_hit
from model_store.sanity import _gradcam_maps, randomised, rank_agreement, sanity_check


def _explanation(m: torch.Tensor, size: tuple[int, int]) -> Explanation:
    return Explanation(predictions=(), targets=(0,), maps={MapKey("gradcam", "l", 0): m}, input_size=size)


def test_heatmap_upsamples_bilinearly_not_nearest() -> None:
    m = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    heat = heatmap(_explanation(m, (4, 4)), "gradcam", "l", 0)
    # bilinear (align_corners=False): the peak cell's two interior-side pixels get 0.75 and 0.25, no ties with 1.0
    assert heat.shape == (4, 4)
    assert heat[0, 2] == pytest.approx(0.75) and heat[0, 1] == pytest.approx(0.25)
    assert heat[0, 3] == pytest.approx(1.0)


def test_heatmap_reduces_gradient_maps_by_channel_abs_max() -> None:
    g = torch.zeros(3, 4, 4)
    g[1, 2, 3] = -2.0
    g[0, 0, 0] = 1.0
    heat = heatmap(_explanation(g, (4, 4)), "gradcam", "l", 0)
    assert heat[2, 3] == 2.0 and heat[0, 0] == 1.0


def test_pointing_and_energy() -> None:
    heat = torch.zeros(8, 8)
    heat[2, 5] = 3.0
    heat[7, 7] = 1.0
    assert pointing_hit(heat, (4, 1, 6, 3)) is True  # x in [4, 6), y in [1, 3)
    assert pointing_hit(heat, (0, 0, 5, 8)) is False  # x = 5 is outside a half-open box ending at 5
    assert pointing_hit(torch.zeros(8, 8), (0, 0, 8, 8)) is None
    assert energy_in_box(heat, (4, 1, 6, 3)) == pytest.approx(0.75)
    neg = -heat
    assert energy_in_box(neg, (0, 0, 8, 8)) == 0.0


def test_randomised_copies_change_the_right_weights() -> None:
    model = zoo.build("shapes-classifier")
    full = randomised(model, "full")
    last = randomised(model, "last_stage")
    assert torch.equal(model.stem[0].weight, last.stem[0].weight)  # type: ignore[index]
    assert not torch.equal(model.layer3.conv1.weight, last.layer3.conv1.weight)
    assert not torch.equal(model.fc.weight, last.fc.weight)
    assert not torch.equal(model.stem[0].weight, full.stem[0].weight)  # type: ignore[index]
    assert torch.equal(zoo.build("shapes-classifier").fc.weight, model.fc.weight)  # the original is untouched
    with pytest.raises(ValueError, match="scope"):
        randomised(model, "first_stage")


def test_gradcam_fails_the_randomisation_test_as_it_should() -> None:
    """Grad-CAM maps must depend on the learned weights: rank correlation with randomised models stays < 0.2."""
    model = zoo.build("shapes-classifier")
    batch = data.make_batch("test", EVAL_START + 5000, 40)
    results = {r.scope: r for r in sanity_check(model, batch, "layer3")}
    assert set(results) == {"full", "last_stage"}
    for res in results.values():
        assert res.count == 40
        assert res.mean_rho < 0.2, res
        assert math.isnan(res.mean_rho_nonconstant) or res.mean_rho_nonconstant < 0.2, res

    # the check can fail: the trained model's maps against themselves (and a mildly perturbed copy) correlate highly
    maps = _gradcam_maps(model, data.to_tensor(batch.images), [int(v) for v in batch.labels], "layer3")
    assert rank_agreement("self", maps, maps).mean_rho_nonconstant == pytest.approx(1.0)
    noisy = [m + 0.01 * float(m.max()) * torch.rand(m.shape, generator=torch.Generator().manual_seed(1)) for m in maps]
    assert rank_agreement("noisy", maps, noisy).mean_rho > 0.5


def test_rank_agreement_counts_constant_maps() -> None:
    a = [torch.arange(16.0).reshape(4, 4), torch.arange(16.0).reshape(4, 4)]
    b = [torch.zeros(4, 4), -torch.arange(16.0).reshape(4, 4)]
    res = rank_agreement("x", a, b)
    assert res.constant_maps == 1 and res.count == 2
    assert res.rhos == (0.0, pytest.approx(-1.0)) and res.mean_rho == pytest.approx(-0.5)
    assert res.mean_rho_nonconstant == pytest.approx(-1.0)
