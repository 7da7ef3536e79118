"""The VAE locality metric (``model_store.locality``): exact on hand-made maps, and the seeded-box protocol scores
exactly what the engine's ``area_saliency`` returns for those boxes."""

from __future__ import annotations

import pytest
import torch

from handlers.engine import Box, InvalidArgumentError, VAEExplainer
from model_store.locality import area_locality, random_boxes, region_locality
from model_store.models import ShapesVAE


def _small_vae() -> ShapesVAE:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ShapesVAE(latent_channels=4, widths=(4, 4, 4)).eval()


def _images(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_region_locality_on_hand_made_maps() -> None:
    boxes = [Box(8, 8, 16, 16), Box(0, 0, 8, 8)]
    inside = torch.zeros(3, 32, 32)
    inside[1, 8:16, 8:16] = -2.0  # |g| counts, whatever the sign or channel
    uniform = torch.ones(3, 32, 32)
    report = region_locality(torch.stack([inside, uniform]), boxes, growths=(0, 4, 16))
    assert report.regions == 2 and report.empty_maps == 0
    torch.testing.assert_close(report.per_region_mass[0], torch.ones(3, dtype=torch.float64))
    # The uniform map scores the grown box's area share: 64, 144 (clipped at the corner) and 576 of 1024 pixels.
    torch.testing.assert_close(report.per_region_mass[1], torch.tensor([64, 144, 576], dtype=torch.float64) / 1024)
    assert report.per_region_distance[0] == 0.0
    assert abs(float(report.per_region_distance[1]) - (2 * 12.0**2) ** 0.5) < 1e-9  # (4, 4) to the centre (16, 16)
    # Box 0 grown by 4 and 16: 256 and (clipped to the image) 1024 pixels.
    assert report.uniform_mass == (64 / 1024, (256 + 144) / 2 / 1024, (1024 + 576) / 2 / 1024)
    assert report.share(16) == report.mass[2]
    with pytest.raises(InvalidArgumentError, match="growth 8 was not measured"):
        report.share(8)
    empty = region_locality(torch.zeros(1, 3, 32, 32), boxes[:1])
    assert empty.empty_maps == 1 and empty.mass == (0.0, 0.0, 0.0, 0.0)
    assert abs(empty.distance - (2 * 32**2) ** 0.5) < 1e-9


def test_metrics_name_the_means_for_the_manifest() -> None:
    boxes = [Box(8, 8, 16, 16), Box(0, 0, 8, 8)]
    report = region_locality(torch.ones(2, 3, 32, 32), boxes, growths=(0, 4))
    assert report.metrics() == {
        "mass_within_0px": report.mass[0],
        "mass_within_4px": report.mass[1],
        "com_distance_px": report.distance,
        "regions": 2.0,
    }


def test_area_locality_places_seeded_boxes_and_scores_area_saliency() -> None:
    ex = VAEExplainer(_small_vae(), input_size=(16, 16))
    x = _images(3)
    report = area_locality(ex, x, regions_per_image=2, box_size=3, growths=(0, 2), seed=4, chunk=2)
    again = area_locality(ex, x, regions_per_image=2, box_size=3, growths=(0, 2), seed=4, chunk=3)
    assert report.regions == 6
    torch.testing.assert_close(report.per_region_mass, again.per_region_mass)  # chunking changes nothing
    boxes = random_boxes(2, 3, (16, 16), torch.Generator().manual_seed(4))
    [first] = ex.explain(x[:1], methods="area_saliency", regions=[boxes])
    expected = region_locality(torch.stack([first.map("area_saliency", "", j) for j in range(2)]), boxes, (0, 2))
    torch.testing.assert_close(report.per_region_mass[:2], expected.per_region_mass)
    with pytest.raises(InvalidArgumentError, match="cannot place"):
        area_locality(ex, x, box_size=17)
