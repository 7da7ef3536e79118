"""The service benchmark's archives: camserve's and the stock baseline's, for the same models and weights.

For every benchmarked classifier two archives are built with the project's archive command (model_store.archive),
with the same worker and batching keys: ``<name>`` (camserve's handler) and ``plain-<name>`` (TorchServe's stock
``ImageClassifier``, benchmarks/plain_handler.py). resnet50 gets random weights (``weights=None`` in the zoo, seed
0) saved once into the build folder, so both archives carry the same file. The VAE is camserve's only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model_store import archive, zoo

__all__ = ["MODELS", "BenchModel", "build_archives"]

PLAIN_HANDLER = Path(__file__).resolve().parent / "plain_handler.py"
PLAIN_PREFIX = "plain-"


@dataclass(frozen=True)
class BenchModel:
    """One benchmarked model.

    Attributes:
        key: The ``--models`` name.
        name: camserve's archive (and model) name.
        kind: ``classifier`` or ``vae``.
        image_size: Side of the square test image sent (pixels).
        arch: For torchvision models, the architecture (built with random weights).
    """

    key: str
    name: str
    kind: str
    image_size: int
    arch: str | None = None

    @property
    def plain(self) -> str | None:
        """The baseline's model name (classifiers only)."""
        return PLAIN_PREFIX + self.name if self.kind == "classifier" else None


MODELS: Mapping[str, BenchModel] = {
    "demo": BenchModel("demo", "shapes-classifier", "classifier", 64),
    "resnet50": BenchModel("resnet50", "resnet50", "classifier", 224, arch="resnet50"),
    "vae": BenchModel("vae", "shapes-vae", "vae", 64),
}


def _worker_keys(config: Mapping[str, Any], overrides: Mapping[str, int]) -> dict[str, int]:
    keys = ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout")
    return {k: int(overrides.get(k, config[k])) for k in keys}


def _random_weights(arch: str, out: Path) -> Path:
    path = out / f"{arch}-random.pt"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save(zoo.build(f"{zoo.TORCHVISION_PREFIX}{arch}").state_dict(), path)
    return path


def build_archives(models: Sequence[BenchModel], out: Path, *, overrides: Mapping[str, int] | None = None) -> list[str]:
    """Builds every archive the run needs into ``out``; returns the model names to serve.

    ``overrides`` change TorchServe's worker keys (batchSize, maxBatchDelay, minWorkers, maxWorkers) of every
    archive alike, camserve's and the baseline's.
    """
    overrides = dict(overrides or {})
    if "minWorkers" in overrides or "maxWorkers" in overrides:
        workers = overrides.get("minWorkers", overrides.get("maxWorkers", 1))
        overrides["minWorkers"] = overrides["maxWorkers"] = workers
    out.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    for model in models:
        weights: Path | None = None
        if model.arch is not None:
            weights = _random_weights(model.arch, out)
            config = archive.torchvision_config(model.arch, weights.name)
            archive.build_torchvision(model.arch, weights, out, name=model.name, overrides=overrides)
        else:
            config = archive.load_config(model.name, overrides)
            archive.build(model.name, out, overrides=overrides or None)
        names.append(model.name)
        if model.plain is not None:
            plain = {
                **_worker_keys(config, overrides),
                "plain": {
                    "model": config["camserve"]["model"],
                    "weights": weights.name if weights is not None else None,
                },
            }
            archive.build_custom(model.plain, plain, PLAIN_HANDLER, out, weights=weights)
            names.append(model.plain)
    return names
