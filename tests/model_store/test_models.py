"""The demo networks: shapes, explainability constraints, and the committed weights' quality."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from model_store import data, zoo
from model_store.manifest import WEIGHTS_DIR
from model_store.models import ShapesClassifier, ShapesVAE
from model_store.train import classifier_accuracy, vae_mse

# held-out test-split indices for these tests: disjoint from training (another split) and from the manifest's and
# the benchmark's test ranges
_TEST_START = 500_000


@pytest.fixture(scope="module")
def held_out() -> data.Batch:
    return data.make_batch("test", _TEST_START, 300)


def test_classifier_shapes_and_16x16_last_stage() -> None:
    model = ShapesClassifier().eval()
    feats: dict[str, torch.Size] = {}
    model.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("layer3", o.shape))
    out = model(torch.rand(2, 3, 64, 64))
    assert out.shape == (2, len(data.SHAPE_CLASSES))
    assert feats["layer3"][-2:] == (16, 16)
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d) and isinstance(model.fc, nn.Linear)


@pytest.mark.parametrize("layer", ["stem", "layer2"])
def test_strided_layers_are_centred_where_bilinear_upsampling_puts_their_cells(layer: str) -> None:
    # With every weight positive, the input gradient of one output cell is a blob centred on the input pixels that
    # cell summarises. Bilinear upsampling (align_corners=False) of an s-times smaller map puts cell k at input
    # pixel s*k + (s-1)/2: 0.5 for the 32x32 stem, 1.5 for the 16x16 layer2 (a 3x3 stride-2 layout is off by 0.5 px
    # per stride-2 stage).
    model = ShapesClassifier()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1.0 / module.weight[0].numel())
    model.standardise = nn.Identity()  # type: ignore[assignment]
    model.eval()
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    out: dict[str, torch.Tensor] = {}
    getattr(model, layer).register_forward_hook(lambda m, i, o: out.__setitem__("y", o))
    model(x)
    stride, k = (2, 13) if layer == "stem" else (4, 6)
    out["y"][0, :, k, k].sum().backward()
    g = x.grad[0].abs().sum(0)  # type: ignore[union-attr]
    coords = torch.arange(64, dtype=torch.float64)
    cy = float((g.sum(1).double() * coords).sum() / g.sum())
    cx = float((g.sum(0).double() * coords).sum() / g.sum())
    assert cy == pytest.approx(stride * k + (stride - 1) / 2, abs=0.05)
    assert cx == pytest.approx(stride * k + (stride - 1) / 2, abs=0.05)


def test_channel_standardise_removes_brightness_and_contrast() -> None:
    model = ShapesClassifier().eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.standardise(x * 0.5 + 0.2), model.standardise(x * 0.5 + 0.4), atol=1e-5)
        flat = model.standardise(torch.full((1, 3, 64, 64), 0.7))
    assert float(flat.abs().max()) < 1e-5  # a flat image is not amplified into noise


@pytest.mark.parametrize("cls", [ShapesClassifier, ShapesVAE])
def test_relus_are_plain_non_inplace_modules_used_once(cls: type[nn.Module]) -> None:
    model = cls()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all(not r.inplace for r in relus)
    assert len({id(r) for r in relus}) == len(relus)


def test_vae_has_no_global_operation() -> None:
    banned = (nn.Linear, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.BatchNorm2d)
    assert not any(isinstance(m, banned) for m in ShapesVAE().modules())


def test_vae_interface_and_deterministic_forward() -> None:
    vae = ShapesVAE().eval().requires_grad_(False)
    x = torch.rand(2, 3, 64, 64)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, vae.latent_channels, 8, 8)
    recon = vae.decode(mu)
    assert recon.shape == x.shape and float(recon.min()) >= 0 and float(recon.max()) <= 1
    assert torch.equal(vae(x), recon) and torch.equal(vae(x), vae(x))


def test_vae_is_local_an_input_pixel_only_moves_nearby_outputs() -> None:
    torch.manual_seed(0)
    vae = ShapesVAE().eval()
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    vae(x)[0, :, 32, 32].sum().backward()
    reach = torch.nonzero(x.grad.abs().sum((0, 1)))  # type: ignore[union-attr]
    # the input pixels one output pixel depends on stay within 24 px of it (a global operation would reach all 64)
    assert int(reach.min()) >= 32 - 24 and int(reach.max()) <= 32 + 24


def test_committed_weights_meet_the_accuracy_bar(held_out: data.Batch) -> None:
    model = zoo.build("shapes-classifier")
    acc = classifier_accuracy(model, data.to_tensor(held_out.images), torch.from_numpy(held_out.labels))
    assert acc >= 0.97, acc


def test_committed_vae_meets_the_reconstruction_bar(held_out: data.Batch) -> None:
    vae = zoo.build("shapes-vae")
    assert isinstance(vae, ShapesVAE)
    assert vae_mse(vae, data.to_tensor(held_out.images[:100])) <= 0.01


def test_manifest_records_how_the_weights_were_made() -> None:
    models = json.loads((WEIGHTS_DIR / "manifest.json").read_text())["models"]
    for name in ("shapes-classifier", "shapes-vae"):
        entry = models[name]
        for key in ("sha256", "config", "data", "train_seconds", "metrics", "torch", "file", "bytes"):
            assert key in entry, (name, key)
        assert entry["config"]["seed"] is not None and entry["config"]["epochs"] > 0
    assert models["shapes-classifier"]["metrics"]["test_accuracy"] >= 0.97
    assert models["shapes-vae"]["metrics"]["test_recon_mse"] <= 0.01
