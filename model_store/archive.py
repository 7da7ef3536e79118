"""Builds TorchServe model archives (.mar) for camserve: the one command behind every served model.

    python -m model_store.archive build --all                       # every model in model_store/configs/ whose
                                                                     # handler is installed (others: reported)
    python -m model_store.archive build shapes-classifier [NAME ...]
    python -m model_store.archive build --arch resnet50 --weights my.pt [--name my-resnet]
    python -m model_store.archive list
    (all build forms take --out DIR; default model_store/archives/)

An archive holds three things only: the thin handler entry file (``model_store/entry_classifier.py`` or
``entry_vae.py``, which construct the installed ``handlers`` package's handler with the zoo as its model provider),
the model-config YAML (TorchServe's worker and batching keys plus the ``camserve`` section the handler reads) and,
for ``torchvision:<arch>`` models, the user's weights file. Weights that come with an installed package (the
committed shapes weights, the EfficientNet-Lite0 package) stay there. Nothing is downloaded. Archives use the
``default`` (zip) format and are written atomically, so a running server never sees half a file.

For ``--arch`` the model config is generated: kind ``classifier``, model ``torchvision:<arch>``, preprocessing and
the ImageNet labels from torchvision's metadata (through ``model_store.zoo.info``), and the weights are checked to
load into the architecture before anything is written.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from handlers.engine.errors import CamserveError, InvalidArgumentError, NotFoundError

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_OUT",
    "ENTRY_MODULES",
    "available",
    "build",
    "build_torchvision",
    "load_config",
    "torchvision_config",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""One ``<name>.yaml`` per buildable model; the file name is the model (and archive) name."""

DEFAULT_OUT = Path(__file__).resolve().parent / "archives"
"""Where archives go by default (git-ignored)."""

ENTRY_MODULES: Mapping[str, str] = {
    "classifier": "model_store.entry_classifier",
    "vae": "model_store.entry_vae",
}
"""The handler entry file per model kind, as an importable module of the installed camserve-server package."""

# TorchServe's own model-config keys we set; TorchServe expects integers for all of them.
_WORKER_KEYS: tuple[str, ...] = ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay", "responseTimeout")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # what TorchServe accepts as a model name

# Defaults for generated (--arch) configs: the same worker settings and limits as the committed configs.
_GENERATED_WORKERS: Mapping[str, int] = {
    "minWorkers": 1,
    "maxWorkers": 1,
    "batchSize": 8,
    "maxBatchDelay": 25,
    "responseTimeout": 120,
}
_GENERATED_METHODS = ("gradcam", "gradcam++", "saliency", "guided_backprop")
_LIMITS: Mapping[str, int] = {
    "max_images": 16,
    "max_top_k": 10,
    "max_regions": 16,
    "max_image_bytes": 8_388_608,
    "max_pixels": 40_000_000,
    "max_response_bytes": 15_000_000,
}


def available() -> tuple[str, ...]:
    """Names of the models with a committed config (``model_store/configs/<name>.yaml``), sorted."""
    return tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidArgumentError(
            f"model name {name!r} is not valid for TorchServe: letters, digits, '_', '-', '.'; "
            "starting with a letter or digit",
            field="name",
        )
    return name


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merges ``overrides`` into a copy of ``base`` (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parsed model config ``name`` (with ``overrides`` deep-merged), validated.

    Raises:
        NotFoundError: No config of that name (the message lists the available ones).
        InvalidArgumentError: The config is not valid YAML or fails validation.
    """
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        names = available()
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise NotFoundError(
            f"no model named {name!r}: {hint}available: {', '.join(names) or 'none'} "
            "(or build any torchvision architecture with --arch ARCH --weights FILE)",
            field="name",
        )
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidArgumentError(f"{path} is not valid YAML: {exc}", field="config") from exc
    if not isinstance(config, dict):
        raise InvalidArgumentError(f"{path} must hold a mapping", field="config")
    config = _merge(config, overrides or {})
    _validate(config, source=str(path))
    return config


def _validate(config: Mapping[str, Any], *, source: str) -> None:
    """Checks TorchServe's keys here and the ``camserve`` section with the handler's own parser.

    A config that passes will not stop the worker from loading on a config error; one that fails is refused
    now, with the key named, instead of as a crash-looping worker later.
    """
    from handlers.serving import parse_config

    for key in _WORKER_KEYS:
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "maxBatchDelay" else 1):
            raise InvalidArgumentError(f"{source}: {key} must be a positive integer, got {value!r}", field=key)
    if config["minWorkers"] > config["maxWorkers"]:
        raise InvalidArgumentError(f"{source}: minWorkers > maxWorkers", field="minWorkers")
    try:
        parse_config(config)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{source}: {exc.message}", field=exc.field) from exc


def _entry_installed(kind: str) -> bool:
    try:
        _entry_file(kind)
    except NotFoundError:
        return False
    return True


def _entry_file(kind: str) -> Path:
    module = ENTRY_MODULES.get(kind)
    if module is None:
        raise InvalidArgumentError(f"unknown model kind {kind!r}; known: {', '.join(ENTRY_MODULES)}", field="kind")
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        spec = None
    if spec is None or spec.origin is None:
        raise NotFoundError(
            f"handler entry module {module} ({module.replace('.', '/')}.py) not found: is the camserve-server "
            "package installed (bash deploy/setup.sh, or pip install -e .)?",
            field="handler",
        )
    return Path(spec.origin)


def _version() -> str:
    try:
        return importlib.metadata.version("camserve-server")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _package(
    name: str, config: Mapping[str, Any], out: Path, weights: Path | None, config_text: str | None = None
) -> Path:
    """Runs torch-model-archiver on the entry file, the config and the weights; returns the archive path.

    ``config_text`` is the config file to ship verbatim (a committed config, comments included); by default
    ``config`` is written out as YAML.
    """
    _check_name(name)
    entry = _entry_file(str(config["camserve"]["kind"]))
    out.mkdir(parents=True, exist_ok=True)
    # torch-model-archiver stages files in $TMPDIR/<model name>: give each build its own TMPDIR so two builds of
    # one name (a test and the demo) cannot mix, and build next to the target so the final rename is atomic.
    with tempfile.TemporaryDirectory(dir=out, prefix=f".build-{name}-") as tmp_str:
        tmp = Path(tmp_str)
        (tmp / "stage").mkdir()
        config_file = tmp / "model-config.yaml"
        if config_text is None:
            config_text = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=None, width=120)
        config_file.write_text(config_text, encoding="utf-8")
        cmd = [
            sys.executable, "-m", "model_archiver.model_packaging",
            "--model-name", name,
            "--version", _version(),
            "--handler", str(entry),
            "--config-file", str(config_file),
            "--export-path", str(tmp),
            "--archive-format", "default",
            "--force",
        ]  # fmt: skip
        if weights is not None:
            cmd += ["--serialized-file", str(weights)]
        env = {**os.environ, "TMPDIR": str(tmp / "stage")}
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        built = tmp / f"{name}.mar"
        if result.returncode != 0 or not built.is_file():
            raise InvalidArgumentError(
                f"torch-model-archiver failed for {name} (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}".rstrip(),
                field="archive",
            )
        target = out / f"{name}.mar"
        os.replace(built, target)
    return target


def build(name: str, out: Path = DEFAULT_OUT, *, overrides: Mapping[str, Any] | None = None) -> Path:
    """Builds ``<out>/<name>.mar`` from ``model_store/configs/<name>.yaml``.

    Args:
        name: A name from :func:`available`.
        out: Output folder (created).
        overrides: Config values to change for this build only, deep-merged (tests use
            ``{"maxBatchDelay": 50}``).

    Returns:
        The archive path.

    Raises:
        NotFoundError: Unknown name, or the handler entry module is not installed.
        InvalidArgumentError: Invalid config, or torch-model-archiver failed.
    """
    from model_store import zoo

    config = load_config(name, overrides)
    zoo.info(config["camserve"]["model"])  # the zoo must know the model: fail here, not in the worker
    weights = config["camserve"].get("weights")
    if weights is not None:
        raise InvalidArgumentError(
            f"{name}: committed configs use weights from installed packages (weights: null); "
            "build a model from your own weights file with --arch ARCH --weights FILE",
            field="weights",
        )
    verbatim = None if overrides else (CONFIG_DIR / f"{name}.yaml").read_text(encoding="utf-8")
    return _package(name, config, Path(out), None, verbatim)


def torchvision_config(arch: str, weights_name: str) -> dict[str, Any]:
    """The model config for torchvision architecture ``arch`` with weights file ``weights_name`` in the archive.

    Preprocessing and labels come from torchvision's metadata (``model_store.zoo.info``); nothing is downloaded.

    Raises:
        NotFoundError: Unknown architecture (the message suggests close names).
    """
    from model_store import zoo

    info = zoo.info(f"{zoo.TORCHVISION_PREFIX}{arch}")
    labels = info.get("labels")
    return {
        **_GENERATED_WORKERS,
        "camserve": {
            "kind": "classifier",
            "model": f"{zoo.TORCHVISION_PREFIX}{arch}",
            "weights": weights_name,
            "input_size": [int(v) for v in info["input_size"]],
            "resize": int(info["resize"]),
            "mean": [float(v) for v in info["mean"]],
            "std": [float(v) for v in info["std"]],
            "labels": list(labels) if labels is not None else None,
            "default_methods": list(_GENERATED_METHODS),
            "default_layers": [],
            "limits": dict(_LIMITS),
            "amp": False,
            "channels_last": False,
        },
    }


def build_torchvision(arch: str, weights: Path, out: Path = DEFAULT_OUT, *, name: str | None = None) -> Path:
    """Builds an archive serving torchvision classification architecture ``arch`` with a user's state_dict.

    Args:
        arch: A torchvision classification architecture name (``resnet50``, ``vgg16``, ...).
        weights: A state_dict file for that architecture; it goes into the archive.
        out: Output folder.
        name: Model (and archive) name; default ``arch``.

    Raises:
        NotFoundError: Unknown architecture, or the weights file does not exist.
        InvalidArgumentError: The weights do not load into the architecture, or packaging failed.
    """
    from model_store import zoo

    name = _check_name(name or arch)
    weights = Path(weights)
    config = torchvision_config(arch, weights.name)  # unknown architectures fail first
    if not weights.is_file():
        raise NotFoundError(f"weights file {weights} does not exist", field="weights")
    _validate(config, source=f"generated config for {arch}")
    zoo.build(config["camserve"]["model"], weights)  # fails now, with a clear message, if they do not fit
    return _package(name, config, Path(out), weights)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_store.archive", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build archives")
    b.add_argument("names", nargs="*", metavar="NAME", help=f"models to build ({', '.join(available())})")
    b.add_argument("--all", action="store_true", help="every model in model_store/configs/")
    b.add_argument("--arch", help="a torchvision classification architecture, e.g. resnet50")
    b.add_argument("--weights", type=Path, help="state_dict file for --arch")
    b.add_argument("--name", help="model name for --arch (default: the architecture)")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    sub.add_parser("list", help="list the models that can be built by name")
    args = parser.parse_args(argv)

    if args.command == "list":
        print("\n".join(available()))
        return 0
    chosen = sum([bool(args.all), bool(args.names), args.arch is not None])
    if chosen != 1:
        parser.error("give exactly one of: --all, NAME ..., or --arch ARCH --weights FILE")
    if args.arch is None and (args.weights is not None or args.name is not None):
        parser.error("--weights and --name go with --arch")
    if args.arch is not None and args.weights is None:
        parser.error("--arch needs --weights FILE (a state_dict); camserve never downloads weights")
    try:
        if args.arch is not None:
            paths = [build_torchvision(args.arch, args.weights, args.out, name=args.name)]
        elif args.all:
            paths = []
            for name in available():
                kind = str(load_config(name)["camserve"]["kind"])
                if not _entry_installed(kind):
                    # --all builds what the installed handlers can serve; a named build stays strict.
                    missing = ENTRY_MODULES[kind]
                    print(f"archive: skipped {name}: no {kind} handler installed ({missing})", file=sys.stderr)
                    continue
                paths.append(build(name, args.out))
        else:
            paths = [build(name, args.out) for name in args.names]
    except CamserveError as exc:
        print(f"archive: {exc.message}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"built {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
