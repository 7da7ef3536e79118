"""The ``camserve`` model-config section: the committed configs parse, and every bad key fails with its name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from handlers.engine.errors import InvalidArgumentError
from handlers.serving._config import Limits, ServingConfig, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "model_store" / "configs"


def minimal(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"kind": "classifier", "model": "shapes-classifier", "input_size": [64, 64]}
    section.update(overrides)
    return {"camserve": section}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_committed_configs_parse(path: Path) -> None:
    config = parse_config(yaml.safe_load(path.read_text()))
    assert config.kind in ("classifier", "vae")
    assert config.resize >= max(config.input_size)


def test_defaults_fill_optional_keys() -> None:
    config = parse_config(minimal())
    assert config == ServingConfig(kind="classifier", model="shapes-classifier", input_size=(64, 64), resize=64)
    assert config.limits == Limits()


def test_full_section() -> None:
    config = parse_config(
        minimal(
            weights="resnet50.pt",
            resize=256,
            input_size=[224, 224],
            mean=[0.485, 0.456, 0.406],
            std=[0.229, 0.224, 0.225],
            labels=["a", "b"],
            default_methods=["gradcam"],
            default_layers=["layer4"],
            limits={"max_images": 2, "max_response_bytes": 1000},
            amp=True,
            channels_last=True,
        )
    )
    assert config.weights == "resnet50.pt" and config.input_size == (224, 224) and config.resize == 256
    assert config.labels == ("a", "b") and config.default_methods == ("gradcam",)
    assert config.limits.max_images == 2 and config.limits.max_response_bytes == 1000
    assert config.limits.max_top_k == Limits().max_top_k and config.amp is True
    assert config.channels_last is True and parse_config(minimal()).channels_last is False


@pytest.mark.parametrize(
    ("yaml_config", "field", "pattern"),
    [
        (None, "camserve", "no 'camserve' section"),
        ({"minWorkers": 1}, "camserve", "no 'camserve' section"),
        ({"camserve": [1, 2]}, "camserve", "must be a mapping"),
        (minimal(max_image=3), "camserve.max_image", "unknown key"),
        ({"camserve": {"kind": "classifier", "input_size": [8, 8]}}, "camserve.model", "required"),
        (minimal(kind="detector"), "camserve.kind", "classifier' or 'vae'"),
        (minimal(model=""), "camserve.model", "zoo spec"),
        (minimal(weights="../etc/passwd"), "camserve.weights", "file name"),
        (minimal(input_size=[64]), "camserve.input_size", r"\[H, W\]"),
        (minimal(input_size=[64, 0]), "camserve.input_size[1]", "positive integer"),
        (minimal(input_size=[64, True]), "camserve.input_size[1]", "positive integer"),
        (minimal(resize=32), "camserve.resize", ">= max"),
        (minimal(mean=[0, 0]), "camserve.mean", "3 numbers"),
        (minimal(std=[1, 0, 1]), "camserve.std", "> 0"),
        (minimal(std=[1, float("nan"), 1]), "camserve.std", "finite"),
        (minimal(labels=[]), "camserve.labels", "non-empty"),
        (minimal(labels=["a", 2]), "camserve.labels", "strings"),
        (minimal(default_methods="gradcam"), "camserve.default_methods", "list"),
        (minimal(default_layers=["a", "a"]), "camserve.default_layers", "duplicates"),
        (minimal(limits={"max_images": 0}), "camserve.limits.max_images", "positive integer"),
        (minimal(limits={"max_imgs": 3}), "camserve.limits", "unknown keys"),
        (minimal(limits=5), "camserve.limits", "mapping"),
        (minimal(amp="yes"), "camserve.amp", "true or false"),
        (minimal(channels_last=1), "camserve.channels_last", "true or false"),
    ],
)
def test_bad_sections_name_the_key(yaml_config: Any, field: str, pattern: str) -> None:
    with pytest.raises(InvalidArgumentError, match=pattern) as err:
        parse_config(yaml_config)
    assert err.value.field == field
