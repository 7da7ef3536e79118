"""The ``camserve`` section of a model archive's model-config YAML, validated once at load.

TorchServe hands the parsed YAML to the handler as ``context.model_yaml_config``; our keys live under ``camserve``
(PLAN.md, Interface 3). A bad section must stop the model from loading with a message that names the key, rather than
fail later on a request, so every key is checked here: types, ranges, and unknown keys (a typo such as
``max_image`` would otherwise silently fall back to a default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from handlers.engine.errors import InvalidArgumentError

__all__ = ["Limits", "ServingConfig", "parse_config"]

Kind = Literal["classifier", "vae"]

_SECTION: Final = "camserve"


@dataclass(frozen=True)
class Limits:
    """Per-request limits. Defaults fit TorchServe's default 6,553,500-byte request and response caps.

    Attributes:
        max_images: Images per request.
        max_top_k: Largest ``top_k`` and longest class list per image.
        max_regions: VAE regions per image.
        max_image_bytes: Size of one encoded image file.
        max_pixels: Width x height of one image (checked from the header, before decoding).
        max_response_bytes: Upper bound for one encoded response; keep it below TorchServe's
            ``max_response_size`` (the worker is killed above that).
        max_steps: Largest Integrated Gradients ``options.steps``.
        max_samples: Largest SmoothGrad ``options.samples``.
        max_channels: Largest channel count of a layer Score-CAM may explain (one forward per channel).
        max_passes: The time budget of one request, in model passes: forward inputs plus backward passes over all
            its images, methods, layers and targets, as the methods declare them (prediction forwards not
            counted). A request over it is refused before any work starts.
        max_feature_maps: Feature maps per image (layers x top_n, times the targets for Grad-CAM ranking).
        max_visualize_steps: Steps of one activation-maximisation request.
        max_visualize_ms: Wall time of one activation-maximisation request (it holds its worker that long).
    """

    max_images: int = 16
    max_top_k: int = 10
    max_regions: int = 16
    max_image_bytes: int = 8_388_608
    max_pixels: int = 40_000_000
    max_response_bytes: int = 6_000_000
    max_steps: int = 256
    max_samples: int = 64
    max_channels: int = 2048
    max_passes: int = 4096
    max_feature_maps: int = 256
    max_visualize_steps: int = 500
    max_visualize_ms: int = 2000


@dataclass(frozen=True)
class ServingConfig:
    """The validated ``camserve`` section.

    Attributes:
        kind: ``"classifier"`` or ``"vae"``.
        model: The spec the archive's model provider builds; for camserve's archives a ``model_store.zoo`` spec, e.g.
            ``"shapes-classifier"`` or ``"torchvision:resnet50"``.
        weights: A file name inside the archive (``torchvision:<arch>`` archives) or ``None`` for the model's own.
        input_size: Model input ``(H, W)``.
        resize: Shorter side before the centre crop; at least ``max(input_size)``.
        mean: Normalisation mean per RGB channel (inputs scaled to ``[0, 1]`` first).
        std: Normalisation standard deviation per channel, each > 0.
        labels: Class labels by id, or ``None`` to take them from the model provider.
        default_methods: Methods used when a request names none; empty means the engine's applicable methods.
        default_layers: Layers used when a request names none; empty means the engine's automatic choice.
        limits: Per-request limits.
        amp: Run the model's forward under autocast: float16 on a GPU, bfloat16 on the CPU (slower than float32 on
            CPUs without native bfloat16, so off by default; see ``handlers/serving/README.md``).
        channels_last: Keep the model's weights and the images in ``torch.channels_last`` (NHWC): faster convolutions
            on GPUs with tensor cores (notably under ``amp``); measured on this CPU in ``benchmarks/RESULTS.md``.
    """

    kind: Kind
    model: str
    weights: str | None = None
    input_size: tuple[int, int] = (224, 224)
    resize: int = 256
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    labels: tuple[str, ...] | None = None
    default_methods: tuple[str, ...] = ()
    default_layers: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    amp: bool = False
    channels_last: bool = False


_KEYS: Final = frozenset(
    {
        "kind",
        "model",
        "weights",
        "input_size",
        "resize",
        "mean",
        "std",
        "labels",
        "default_methods",
        "default_layers",
        "limits",
        "amp",
        "channels_last",
    }
)
_LIMIT_KEYS: Final = frozenset(Limits.__dataclass_fields__)


def _fail(key: str, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"model config {_SECTION}.{key}: {message}", field=f"{_SECTION}.{key}")


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _fail(key, f"must be a positive integer, got {value!r}")
    return value


def _floats3(value: Any, key: str, *, positive: bool) -> tuple[float, float, float]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise _fail(key, f"must be a list of 3 numbers, got {value!r}")
    out: list[float] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item):
            raise _fail(key, f"must hold finite numbers, got {item!r}")
        if positive and item <= 0:
            raise _fail(key, f"must hold numbers > 0, got {item!r}")
        out.append(float(item))
    return (out[0], out[1], out[2])


def _names(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, f"must be a list of non-empty names, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(key, f"has duplicates: {value!r}")
    return tuple(value)


def _limits(value: Any) -> Limits:
    if value is None:
        return Limits()
    if not isinstance(value, Mapping):
        raise _fail("limits", f"must be a mapping, got {value!r}")
    unknown = sorted(set(value) - _LIMIT_KEYS)
    if unknown:
        raise _fail("limits", f"unknown keys {unknown}; known: {sorted(_LIMIT_KEYS)}")
    return Limits(**{k: _positive_int(v, f"limits.{k}") for k, v in value.items()})


def parse_config(model_yaml_config: Mapping[str, Any] | None) -> ServingConfig:
    """Validates the ``camserve`` section of a model-config YAML.

    Args:
        model_yaml_config: ``context.model_yaml_config`` as TorchServe parsed it (the whole YAML).

    Returns:
        The validated configuration.

    Raises:
        InvalidArgumentError: Missing section, unknown keys, wrong types or ranges; the message names the key.
    """
    if not model_yaml_config or _SECTION not in model_yaml_config:
        raise InvalidArgumentError(
            f"the model-config YAML has no '{_SECTION}' section (see PLAN.md Interface 3)", field=_SECTION
        )
    raw = model_yaml_config[_SECTION]
    if not isinstance(raw, Mapping):
        raise InvalidArgumentError(f"'{_SECTION}' must be a mapping, got {type(raw).__name__}", field=_SECTION)
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _fail(unknown[0], f"unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    for required in ("kind", "model", "input_size"):
        if required not in raw:
            raise _fail(required, "is required")

    kind = raw["kind"]
    if kind not in ("classifier", "vae"):
        raise _fail("kind", f"must be 'classifier' or 'vae', got {kind!r}")
    model = raw["model"]
    if not isinstance(model, str) or not model:
        raise _fail("model", f"must be a zoo spec string, got {model!r}")
    weights = raw.get("weights")
    if weights is not None and (
        not isinstance(weights, str) or not weights or "/" in weights or "\\" in weights or weights in (".", "..")
    ):
        raise _fail("weights", f"must be a file name inside the archive (no directories) or null, got {weights!r}")

    size = raw["input_size"]
    if not isinstance(size, list | tuple) or len(size) != 2:
        raise _fail("input_size", f"must be [H, W], got {size!r}")
    input_size = (_positive_int(size[0], "input_size[0]"), _positive_int(size[1], "input_size[1]"))
    resize = _positive_int(raw.get("resize", max(input_size)), "resize")
    if resize < max(input_size):
        raise _fail("resize", f"must be >= max(input_size) = {max(input_size)}, got {resize}")

    labels_raw = raw.get("labels")
    labels: tuple[str, ...] | None = None
    if labels_raw is not None:
        valid = isinstance(labels_raw, list | tuple) and all(isinstance(v, str) for v in labels_raw)
        if not valid or not labels_raw:
            raise _fail("labels", "must be a non-empty list of strings or null")
        labels = tuple(labels_raw)

    amp, channels_last = (raw.get(key, False) for key in ("amp", "channels_last"))
    for key, value in (("amp", amp), ("channels_last", channels_last)):
        if not isinstance(value, bool):
            raise _fail(key, f"must be true or false, got {value!r}")

    return ServingConfig(
        kind=kind,
        model=model,
        weights=weights,
        input_size=input_size,
        resize=resize,
        mean=_floats3(raw.get("mean", [0.0, 0.0, 0.0]), "mean", positive=False),
        std=_floats3(raw.get("std", [1.0, 1.0, 1.0]), "std", positive=True),
        labels=labels,
        default_methods=_names(raw.get("default_methods"), "default_methods"),
        default_layers=_names(raw.get("default_layers"), "default_layers"),
        limits=_limits(raw.get("limits")),
        amp=amp,
        channels_last=channels_last,
    )
