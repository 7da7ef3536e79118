"""Area maps of the trained ``shapes-vae`` are local (issue 4): most |grad| mass lies near the region.

The numbers come from ``model_store.evaluate.vae_area_locality`` (``model_store.locality.area_locality``: 4 random 8x8
boxes on each of the first 50 held-out images of the localisation benchmark, box seed 0, growths 0/4/8/16 px),
the same call the benchmark (``python -m model_store.evaluate``) prints, so the README numbers and this test agree.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from handlers.engine import VAEExplainer
from handlers.engine.errors import NotFoundError
from model_store import data, zoo
from model_store.evaluate import EVAL_START, VAE_LOCALITY_IMAGES, vae_area_locality

from .conftest import Snapshot


@pytest.fixture(scope="module")
def shapes_vae() -> nn.Module:
    try:
        return zoo.build("shapes-vae")
    except NotFoundError as exc:  # the weights are committed by the demo-models issue; until then there is nothing
        pytest.skip(f"shapes-vae weights not committed yet: {exc}")


def test_area_saliency_mass_lies_near_the_region(shapes_vae: nn.Module) -> None:
    snap = Snapshot.of(shapes_vae)
    x = data.to_tensor(data.make_batch("test", EVAL_START, VAE_LOCALITY_IMAGES).images)
    report = vae_area_locality(shapes_vae, x)
    print("\n".join(report.lines()))
    assert report.regions == 200 and report.empty_maps == 0
    assert report.share(8) >= 0.6, report.lines()
    assert report.distance <= 4.0, report.lines()
    # The bars mean something: a uniform map would score about 0.13 and 22 px on these boxes.
    assert report.uniform_mass[report.growths.index(8)] < 0.2 and report.uniform_distance > 15
    snap.assert_same(shapes_vae)


def test_reconstruction_and_batched_regions_on_the_trained_model(shapes_vae: nn.Module) -> None:
    x = data.to_tensor(data.make_batch("test", EVAL_START, 2).images)
    ex = VAEExplainer(shapes_vae)
    boxes = [[(0, 0, 8, 8), (28, 28, 36, 36), (56, 0, 64, 8)], [(10, 20, 30, 40)]]
    results = ex.explain(x, methods=("area_saliency", "area_gradcam"), regions=boxes)
    with torch.no_grad():
        expected = shapes_vae(x)
    for i, r in enumerate(results):
        torch.testing.assert_close(r.reconstruction, expected[i], atol=1e-5, rtol=1e-4)
        for j, box in enumerate(boxes[i]):
            [alone] = ex.explain(x[i : i + 1], methods=("area_saliency", "area_gradcam"), regions=[[box]])
            for key, value in alone.maps.items():
                scale = float(value.abs().max())
                torch.testing.assert_close(r.maps[key._replace(target=j)], value, atol=1e-5 * scale, rtol=1e-4)
