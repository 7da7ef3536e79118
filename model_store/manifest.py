"""The weights manifest: where the demo models' weights live, what their files are called, how they are checksummed.

One owner for the facts that training writes and the zoo verifies. ``python -m model_store.train`` writes
``manifest.json`` beside the weights it saves; :func:`manifest_entry` reads one model's entry back when the zoo loads
a file, which must match the recorded sha256 before anything is unpickled. Serving imports this module through the
zoo and never the training script.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from handlers.engine.errors import InvalidArgumentError

__all__ = ["FILES", "MANIFEST_NAME", "WEIGHTS_DIR", "manifest_entry", "sha256_file"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""The committed weights and their ``manifest.json``."""

MANIFEST_NAME = "manifest.json"
"""File name of the manifest, always beside the weights files it describes."""

FILES = {"shapes-classifier": "shapes-classifier.pt", "shapes-vae": "shapes-vae.pt"}
"""Weights file name per demo model spec."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_entry(spec: str, weights: Path) -> dict[str, Any]:
    """The manifest entry of model ``spec`` whose file is ``weights`` (read from the manifest beside it).

    Raises:
        InvalidArgumentError: No manifest, an unreadable one, or no entry for ``spec`` with that file and a sha256.
    """
    manifest = weights.parent / MANIFEST_NAME
    if not manifest.is_file():
        raise InvalidArgumentError(
            f"no {MANIFEST_NAME} beside weights file {weights}; it is needed to verify the checksum", field="weights"
        )
    try:
        models = json.loads(manifest.read_text())["models"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgumentError(f"unreadable manifest {manifest}: {exc}", field="weights") from exc
    entry = models.get(spec) if isinstance(models, dict) else None
    if not isinstance(entry, dict) or entry.get("file") != weights.name or "sha256" not in entry:
        raise InvalidArgumentError(
            f"manifest {manifest} has no entry for {spec!r} with file {weights.name!r}", field="weights"
        )
    return entry
