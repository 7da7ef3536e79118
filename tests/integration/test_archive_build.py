"""The archive command: what goes into a .mar, generated configs for torchvision architectures, clear errors.

No server: archives are opened as zip files and their configs checked against the handler's own parser.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

from handlers.engine.errors import InvalidArgumentError, NotFoundError
from handlers.serving import parse_config
from model_store import archive, zoo

ROOT = Path(__file__).resolve().parents[2]
SMALL_ARCH = "squeezenet1_1"  # 5 MB of weights: the smallest torchvision classifier


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_committed_configs_are_listed_and_valid() -> None:
    assert {"shapes-classifier", "shapes-vae", "imagenet-efficientnet-lite0"} <= set(archive.available())
    for name in archive.available():
        config = archive.load_config(name)
        assert config["minWorkers"] == config["maxWorkers"] == 1, name
        assert config["camserve"]["weights"] is None, f"{name}: weights come from installed packages"


@pytest.mark.parametrize("name", archive.available())
def test_committed_preprocessing_matches_the_zoo(name: str) -> None:
    """The YAML repeats what the zoo knows about the model's input; a drift would serve wrong explanations."""
    cfg = archive.load_config(name)["camserve"]
    try:
        info = zoo.info(cfg["model"])
    except NotFoundError as exc:
        pytest.skip(f"the zoo does not know {cfg['model']} yet: {exc.message}")
    assert cfg["kind"] == info["kind"]
    assert tuple(cfg["input_size"]) == tuple(info["input_size"])
    assert cfg["resize"] == info["resize"]
    assert cfg["mean"] == pytest.approx(list(info["mean"]), abs=1e-12)
    assert cfg["std"] == pytest.approx(list(info["std"]), abs=1e-12)


def test_build_shapes_classifier_ships_entry_and_config_only(tmp_path: Path) -> None:
    path = archive.build("shapes-classifier", tmp_path)
    assert path == tmp_path / "shapes-classifier.mar"
    files = members(path)
    assert set(files) == {"entry_classifier.py", "model-config.yaml", "MAR-INF/MANIFEST.json"}
    manifest = json.loads(files["MAR-INF/MANIFEST.json"])
    assert manifest["model"]["handler"] == "entry_classifier.py"
    assert manifest["model"]["configFile"] == "model-config.yaml"
    assert "serializedFile" not in manifest["model"]
    # Shipped verbatim, comments included.
    assert files["model-config.yaml"] == (archive.CONFIG_DIR / "shapes-classifier.yaml").read_bytes()
    assert files["entry_classifier.py"] == (ROOT / "model_store" / "entry_classifier.py").read_bytes()
    assert not list(tmp_path.glob(".build-*")), "staging folder left behind"


def test_overrides_change_only_that_build(tmp_path: Path) -> None:
    path = archive.build("shapes-classifier", tmp_path, overrides={"maxBatchDelay": 50, "camserve": {"amp": True}})
    config = yaml.safe_load(members(path)["model-config.yaml"])
    assert config["maxBatchDelay"] == 50
    assert config["camserve"]["amp"] is True
    assert config["camserve"]["model"] == "shapes-classifier"  # merged, not replaced
    assert archive.load_config("shapes-classifier")["maxBatchDelay"] == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"camserve": {"kind": "gan"}}, "kind"),
        ({"minWorkers": 2}, "minWorkers > maxWorkers"),
        ({"batchSize": 0}, "batchSize"),
        ({"camserve": {"limits": {"max_image": 3}}}, "unknown keys"),
        ({"camserve": {"resize": 32}}, "resize"),
    ],
)
def test_invalid_configs_are_refused_before_packaging(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        archive.build("shapes-classifier", tmp_path, overrides=overrides)
    assert not list(tmp_path.iterdir())


def test_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(NotFoundError, match="did you mean shapes-classifier") as info:
        archive.build("shapes-clasifier")
    assert "shapes-vae" in info.value.message and "--arch" in info.value.message


def test_build_torchvision_from_a_state_dict(tmp_path: Path) -> None:
    weights = tmp_path / "my weights.pt"
    torch.save(torchvision.models.get_model(SMALL_ARCH, weights=None).state_dict(), weights)
    path = archive.build_torchvision(SMALL_ARCH, weights, tmp_path / "out", name="my-squeeze")
    files = members(path)
    assert set(files) == {"my weights.pt", "model-config.yaml", "entry_classifier.py", "MAR-INF/MANIFEST.json"}
    assert files["my weights.pt"] == weights.read_bytes()
    config = yaml.safe_load(files["model-config.yaml"])
    cfg = parse_config(config)  # the handler accepts it
    assert cfg.kind == "classifier" and cfg.model == f"torchvision:{SMALL_ARCH}" and cfg.weights == "my weights.pt"
    assert cfg.input_size == (224, 224) and cfg.resize == 256
    assert cfg.mean == pytest.approx((0.485, 0.456, 0.406)) and cfg.std == pytest.approx((0.229, 0.224, 0.225))
    meta = torchvision.models.get_model_weights(SMALL_ARCH).DEFAULT.meta["categories"]
    assert cfg.labels == tuple(meta) and len(meta) == 1000
    assert (
        cfg.limits.max_response_bytes
        == archive.load_config("shapes-classifier")["camserve"]["limits"]["max_response_bytes"]
    )
    assert json.loads(files["MAR-INF/MANIFEST.json"])["model"]["modelName"] == "my-squeeze"


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, weights)
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        archive.build_torchvision(SMALL_ARCH, weights, tmp_path)
    assert not list(tmp_path.glob("*.mar"))


def test_cli_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def cli(*args: str) -> tuple[int, str]:
        try:
            code = archive.main(list(args))
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    assert cli("build", "nope", "--out", str(tmp_path)) == (
        1,
        "archive: no model named 'nope': available: "
        f"{', '.join(archive.available())} (or build any torchvision architecture with --arch ARCH --weights FILE)\n",
    )
    code, out = cli("build", "--arch", "resnet5", "--weights", str(tmp_path / "x.pt"))
    assert code == 1 and "did you mean resnet50" in out
    code, out = cli("build", "--arch", "resnet18", "--weights", str(tmp_path / "x.pt"))
    assert code == 1 and f"weights file {tmp_path / 'x.pt'} does not exist" in out
    code, out = cli("build", "--arch", "resnet18")
    assert code == 2 and "never downloads" in out
    code, out = cli("build", "--all", "shapes-vae")
    assert code == 2 and "exactly one of" in out
    code, out = cli("build", "shapes-vae", "--weights", "w.pt")
    assert code == 2 and "go with --arch" in out
    assert cli("list") == (0, "\n".join(archive.available()) + "\n")
    assert not list(tmp_path.iterdir())


def test_module_entry_point_builds_by_name(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "model_store.archive", "build", "shapes-classifier", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert f"built {tmp_path / 'shapes-classifier.mar'}" in built.stdout


def test_all_skips_kinds_without_an_installed_handler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "ENTRY_MODULES", {**archive.ENTRY_MODULES, "vae": "handlers.serving.no_such_entry"})
    assert archive.main(["build", "--all", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "skipped shapes-vae: no vae handler installed (handlers.serving.no_such_entry)" in err
    assert not (tmp_path / "shapes-vae.mar").exists()
    assert (tmp_path / "shapes-classifier.mar").is_file()
    with pytest.raises(NotFoundError, match="no_such_entry"):  # by name it is an error
        archive.build("shapes-vae", tmp_path)
