"""The model zoo: one place that turns a model spec into a ready-to-explain ``nn.Module`` and its metadata.

Specs:

* ``"shapes-classifier"``, ``"shapes-vae"`` — the demo models. ``weights=None`` loads the committed file from
  ``model_store/weights/``; an explicit file must have a ``manifest.json`` beside it (``python -m model_store.train
  --out DIR`` writes one, :mod:`model_store.manifest` reads it). Either way the file's sha256 is checked against the
  manifest before anything is loaded, and the architecture's hyper-parameters come from the same manifest entry.
* ``"torchvision:<arch>"`` — any torchvision classification architecture by name (``resnet50``, ``vgg16``, ...);
  ``weights`` is a state_dict file, ``None`` gives random weights (nothing is ever downloaded).
* Named entries of :data:`REGISTRY` — the hook for further models: adding one is one ``ModelEntry`` line (e.g. the
  ImageNet helper's ``"efficientnet-lite0"``).

Every built model is on the CPU, in eval mode, with ``requires_grad=False`` on all parameters. Errors come from the
server's one hierarchy (:mod:`handlers.engine.errors`): unknown names are :class:`NotFoundError` (with close
matches), unusable files are :class:`InvalidArgumentError`, a checksum mismatch is :class:`ChecksumMismatchError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from handlers.engine.errors import InvalidArgumentError, NotFoundError
from model_store import data, imagenet
from model_store.manifest import FILES, WEIGHTS_DIR, manifest_entry, sha256_file
from model_store.models import ShapesClassifier, ShapesVAE

__all__ = [
    "REGISTRY",
    "SHAPE_CLASSES",
    "TORCHVISION_PREFIX",
    "ChecksumMismatchError",
    "ModelEntry",
    "build",
    "info",
    "specs",
]

SHAPE_CLASSES: tuple[str, ...] = data.SHAPE_CLASSES
TORCHVISION_PREFIX = "torchvision:"


class ChecksumMismatchError(InvalidArgumentError):
    """A weights file's sha256 differs from the one recorded in its manifest (corrupt or replaced file)."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"checksum mismatch for weights file {path}: manifest says sha256 {expected}, file has {actual}",
            field="weights",
        )
        self.path = path
        self.expected = expected
        self.actual = actual


@dataclass(frozen=True)
class ModelEntry:
    """How to build one named model and describe its input.

    Attributes:
        build: ``weights -> module`` (``None`` = the model's default weights). The zoo freezes and evals the result.
        info: ``() -> dict`` with the keys documented in :func:`info`.
    """

    build: Callable[[Path | None], nn.Module]
    info: Callable[[], dict[str, Any]]


# --------------------------------------------------------------------------------------------------- shapes models


def _verified_state_dict(spec: str, weights: Path | None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(weights) if weights is not None else WEIGHTS_DIR / FILES[spec]
    if not path.is_file():
        raise NotFoundError(f"weights file {path} does not exist", field="weights")
    entry = manifest_entry(spec, path)
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ChecksumMismatchError(path, str(entry["sha256"]), actual)
    return _load_state_dict(path), entry


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise NotFoundError(f"weights file {path} does not exist", field="weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for non-checkpoint / pickled-object files
        raise InvalidArgumentError(f"cannot read weights file {path} as a state_dict: {exc}", field="weights") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidArgumentError(f"weights file {path} does not hold a state_dict of tensors", field="weights")
    return state


def _apply_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> nn.Module:
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise InvalidArgumentError(
            f"weights file {source} does not fit {type(model).__name__}: {exc}", field="weights"
        ) from exc
    return model


_CLASSIFIER_ARCH = ("width", "standardise_eps", "dilation")
"""The ``ClassifierConfig`` fields that shape :class:`ShapesClassifier` (the rest are training settings)."""


def _build_classifier(weights: Path | None) -> nn.Module:
    state, entry = _verified_state_dict("shapes-classifier", weights)
    cfg = entry.get("config", {})
    # the architecture's settings as trained; any the manifest does not record take ShapesClassifier's defaults
    arch = {key: cfg[key] for key in _CLASSIFIER_ARCH if key in cfg}
    model = ShapesClassifier(num_classes=len(SHAPE_CLASSES), **arch)
    return _apply_state(model, state, Path(weights) if weights else WEIGHTS_DIR / FILES["shapes-classifier"])


def _build_vae(weights: Path | None) -> nn.Module:
    state, entry = _verified_state_dict("shapes-vae", weights)
    cfg = entry.get("config", {})
    widths = tuple(int(w) for w in cfg.get("widths", (24, 48, 64)))
    if len(widths) != 3:
        raise InvalidArgumentError(f"manifest entry for shapes-vae has bad widths {widths}", field="weights")
    model = ShapesVAE(latent_channels=int(cfg.get("latent_channels", 32)), widths=(widths[0], widths[1], widths[2]))
    return _apply_state(model, state, Path(weights) if weights else WEIGHTS_DIR / FILES["shapes-vae"])


def _shapes_info(kind: str) -> Callable[[], dict[str, Any]]:
    def info() -> dict[str, Any]:
        size = data.DEFAULT_SIZE
        return {
            "kind": kind,
            "input_size": (size, size),
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "labels": SHAPE_CLASSES if kind == "classifier" else None,
            "resize": size,
            "crop": size,
            "interpolation": "bilinear",
        }

    return info


REGISTRY: dict[str, ModelEntry] = {
    "shapes-classifier": ModelEntry(build=_build_classifier, info=_shapes_info("classifier")),
    "shapes-vae": ModelEntry(build=_build_vae, info=_shapes_info("vae")),
    "efficientnet-lite0": ModelEntry(build=imagenet.build, info=imagenet.info),  # model_store/imagenet.py (issue 7)
}
"""Named models. Specs with the ``torchvision:`` prefix are handled separately (any architecture by name)."""


# ------------------------------------------------------------------------------------------------------ torchvision


def _torchvision_arch(spec: str) -> str:
    import torchvision.models as tvm

    arch = spec[len(TORCHVISION_PREFIX) :]
    names = tvm.list_models(module=tvm)  # classification architectures only
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(names)}"
        raise NotFoundError(f"unknown torchvision classification architecture {arch!r}{hint}", field="model")
    return arch


def _build_torchvision(spec: str, weights: Path | None) -> nn.Module:
    import torchvision.models as tvm

    arch = _torchvision_arch(spec)
    state = _load_state_dict(Path(weights)) if weights is not None else None
    model: nn.Module = tvm.get_model(arch, weights=None)
    if state is not None and weights is not None:
        _apply_state(model, state, Path(weights))
    return model


def _info_torchvision(spec: str) -> dict[str, Any]:
    import torchvision.models as tvm

    arch = _torchvision_arch(spec)
    default = tvm.get_model_weights(arch).DEFAULT  # metadata only: nothing is downloaded
    transform = default.transforms()
    crop = int(transform.crop_size[0])
    return {
        "kind": "classifier",
        "input_size": (crop, crop),
        "mean": tuple(float(m) for m in transform.mean),
        "std": tuple(float(s) for s in transform.std),
        "labels": tuple(default.meta["categories"]),
        "resize": int(transform.resize_size[0]),
        "crop": crop,
        "interpolation": str(transform.interpolation.value),
    }


# ------------------------------------------------------------------------------------------------------- public API


def _check_spec(spec: object) -> str:
    if not isinstance(spec, str) or not spec:
        raise InvalidArgumentError(f"model spec must be a non-empty string, got {spec!r}", field="model")
    if spec.startswith(TORCHVISION_PREFIX) or spec in REGISTRY:
        return spec
    close = difflib.get_close_matches(spec, list(REGISTRY), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise NotFoundError(
        f"unknown model spec {spec!r}{hint} (known: {', '.join(specs())}, or {TORCHVISION_PREFIX}<arch>)",
        field="model",
    )


def specs() -> tuple[str, ...]:
    """Names of the registered models (``torchvision:<arch>`` specs are accepted in addition)."""
    return tuple(REGISTRY)


def build(spec: str, weights: Path | None = None) -> nn.Module:
    """Build the model named by ``spec``: CPU, eval mode, all parameters with ``requires_grad=False``.

    Args:
        spec: ``"shapes-classifier"``, ``"shapes-vae"``, ``"torchvision:<arch>"`` or another :data:`REGISTRY` name.
        weights: A weights file; ``None`` = the model's default (committed weights for the shapes models, random
            weights for torchvision architectures).

    Raises:
        NotFoundError: Unknown spec or architecture (message lists close matches), or missing weights file.
        ChecksumMismatchError: The shapes weights file does not match its manifest's sha256.
        InvalidArgumentError: The weights file is not a state_dict that fits the architecture.
    """
    spec = _check_spec(spec)
    if weights is not None and not isinstance(weights, (str, Path)):
        raise InvalidArgumentError(f"weights must be a path or None, got {type(weights).__name__}", field="weights")
    weights_path = Path(weights) if weights is not None else None
    model = (
        _build_torchvision(spec, weights_path)
        if spec.startswith(TORCHVISION_PREFIX)
        else REGISTRY[spec].build(weights_path)
    )
    model = model.to("cpu").eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def info(spec: str) -> dict[str, Any]:
    """Describe the input and output of ``spec`` without building it.

    Returns:
        ``kind`` (``"classifier"`` or ``"vae"``), ``input_size`` ``(H, W)``, ``mean`` and ``std`` (per channel, on
        [0, 1] pixels), ``labels`` (tuple of class names, ``None`` for a VAE), ``resize`` (shorter side before the
        centre crop), ``crop`` and ``interpolation``.

    Raises:
        NotFoundError: Unknown spec or architecture.
    """
    spec = _check_spec(spec)
    return _info_torchvision(spec) if spec.startswith(TORCHVISION_PREFIX) else dict(REGISTRY[spec].info())
