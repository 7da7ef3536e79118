"""The model zoo: spec parsing, torchvision architectures, checksum verification and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from handlers.engine.errors import InvalidArgumentError, NotFoundError
from model_store import zoo
from model_store.manifest import WEIGHTS_DIR, sha256_file
from model_store.models import ShapesClassifier


def _frozen_eval_cpu(model: torch.nn.Module) -> None:
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_shape_classes_and_info_of_the_demo_models() -> None:
    assert zoo.SHAPE_CLASSES[:3] == ("circle", "square", "triangle") and len(zoo.SHAPE_CLASSES) >= 6
    cls = zoo.info("shapes-classifier")
    assert cls["kind"] == "classifier" and cls["input_size"] == (64, 64) and cls["labels"] == zoo.SHAPE_CLASSES
    assert cls["mean"] == (0.0, 0.0, 0.0) and cls["std"] == (1.0, 1.0, 1.0) and cls["resize"] == cls["crop"] == 64
    vae = zoo.info("shapes-vae")
    assert vae["kind"] == "vae" and vae["labels"] is None


def test_torchvision_info_comes_from_weights_metadata_without_download() -> None:
    info = zoo.info("torchvision:resnet18")
    assert info["kind"] == "classifier" and info["input_size"] == (224, 224)
    assert info["resize"] == 256 and info["crop"] == 224
    assert info["mean"] == pytest.approx((0.485, 0.456, 0.406)) and info["std"] == pytest.approx((0.229, 0.224, 0.225))
    assert len(info["labels"]) == 1000 and info["labels"][0] == "tench"
    assert zoo.info("torchvision:inception_v3")["input_size"] == (299, 299)


def test_torchvision_random_and_state_dict_weights(tmp_path: Path) -> None:
    model = zoo.build("torchvision:squeezenet1_1")
    _frozen_eval_cpu(model)
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    # a state_dict file round-trips exactly
    torch.manual_seed(5)
    src = zoo.build("torchvision:squeezenet1_1")
    path = tmp_path / "sq.pt"
    torch.save(src.state_dict(), path)
    loaded = zoo.build("torchvision:squeezenet1_1", weights=path)
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(loaded(x), src(x))


def test_unknown_specs_and_architectures_are_refused_with_close_matches() -> None:
    with pytest.raises(NotFoundError, match="resnet18") as err:
        zoo.build("torchvision:resnet81")
    assert err.value.code == "NOT_FOUND" and err.value.field == "model"
    with pytest.raises(NotFoundError, match="shapes-classifier"):
        zoo.build("shapes-clasifier")
    with pytest.raises(NotFoundError, match="unknown model spec"):
        zoo.info("imagenet")
    with pytest.raises(NotFoundError, match="unknown torchvision"):
        zoo.info("torchvision:")
    with pytest.raises(InvalidArgumentError, match="non-empty string"):
        zoo.build("")
    with pytest.raises(InvalidArgumentError, match="non-empty string"):
        zoo.build(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="weights must be a path"):
        zoo.build("torchvision:resnet18", weights=123)  # type: ignore[arg-type]


def test_bad_weight_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        zoo.build("torchvision:resnet18", weights=tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidArgumentError, match="cannot read weights file"):
        zoo.build("torchvision:resnet18", weights=junk)
    wrong = tmp_path / "wrong.pt"
    torch.save(ShapesClassifier().state_dict(), wrong)
    with pytest.raises(InvalidArgumentError, match="does not fit ResNet"):
        zoo.build("torchvision:resnet18", weights=wrong)
    not_a_dict = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(InvalidArgumentError, match="state_dict"):
        zoo.build("torchvision:resnet18", weights=not_a_dict)


def _copy_weights(tmp_path: Path, name: str) -> Path:
    for fname in (f"{name}.pt", "manifest.json"):
        shutil.copy(WEIGHTS_DIR / fname, tmp_path / fname)
    return tmp_path / f"{name}.pt"


@pytest.mark.parametrize("name", ["shapes-classifier", "shapes-vae"])
def test_committed_weights_match_manifest_and_load(name: str) -> None:
    manifest = json.loads((WEIGHTS_DIR / "manifest.json").read_text())["models"][name]
    path = WEIGHTS_DIR / manifest["file"]
    assert sha256_file(path) == manifest["sha256"]
    assert path.stat().st_size < 5_000_000
    model = zoo.build(name)
    _frozen_eval_cpu(model)


def test_checksum_mismatch_names_the_file_and_both_checksums(tmp_path: Path) -> None:
    path = _copy_weights(tmp_path, "shapes-classifier")
    expected = json.loads((tmp_path / "manifest.json").read_text())["models"]["shapes-classifier"]["sha256"]
    state = torch.load(path, weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1.0  # a valid, loadable file whose content changed
    torch.save(state, path)
    actual = sha256_file(path)
    with pytest.raises(zoo.ChecksumMismatchError) as err:
        zoo.build("shapes-classifier", weights=path)
    msg = str(err.value)
    assert str(path) in msg and expected in msg and actual in msg
    assert isinstance(err.value, InvalidArgumentError) and err.value.field == "weights"


def test_explicit_shapes_weights_need_their_manifest(tmp_path: Path) -> None:
    path = _copy_weights(tmp_path, "shapes-vae")
    model = zoo.build("shapes-vae", weights=path)  # verified copy with manifest beside it loads
    _frozen_eval_cpu(model)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(InvalidArgumentError, match=r"no manifest\.json beside"):
        zoo.build("shapes-vae", weights=path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InvalidArgumentError, match="unreadable manifest"):
        zoo.build("shapes-vae", weights=path)
    (tmp_path / "manifest.json").write_text(json.dumps({"models": {}}))
    with pytest.raises(InvalidArgumentError, match="no entry for 'shapes-vae'"):
        zoo.build("shapes-vae", weights=path)


def test_registry_is_the_hook_for_named_models(monkeypatch: pytest.MonkeyPatch) -> None:
    info = {
        "kind": "classifier",
        "input_size": (8, 8),
        "mean": (0.5,) * 3,
        "std": (0.5,) * 3,
        "labels": ("a", "b"),
        "resize": 8,
        "crop": 8,
        "interpolation": "bilinear",
    }
    entry = zoo.ModelEntry(build=lambda w: torch.nn.Linear(2, 2).train(), info=lambda: info)
    monkeypatch.setitem(zoo.REGISTRY, "tiny-test", entry)
    assert "tiny-test" in zoo.specs()
    model = zoo.build("tiny-test")
    _frozen_eval_cpu(model)
    assert zoo.info("tiny-test") == info
