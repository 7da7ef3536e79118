"""The weights manifest: checksums and the entry lookup the zoo verifies files with (model_store/manifest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handlers.engine.errors import InvalidArgumentError
from model_store.manifest import FILES, MANIFEST_NAME, WEIGHTS_DIR, manifest_entry, sha256_file


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize("spec", sorted(FILES))
def test_committed_entries_are_found(spec: str) -> None:
    entry = manifest_entry(spec, WEIGHTS_DIR / FILES[spec])
    assert entry["file"] == FILES[spec] and len(entry["sha256"]) == 64


def test_missing_or_mismatched_entries_are_refused(tmp_path: Path) -> None:
    weights = tmp_path / "shapes-vae.pt"
    with pytest.raises(InvalidArgumentError, match=f"no {MANIFEST_NAME} beside"):
        manifest_entry("shapes-vae", weights)
    (tmp_path / MANIFEST_NAME).write_text("not json")
    with pytest.raises(InvalidArgumentError, match="unreadable manifest"):
        manifest_entry("shapes-vae", weights)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"models": {"shapes-vae": {"file": "other.pt", "sha256": "0"}}}))
    with pytest.raises(InvalidArgumentError, match=r"no entry for 'shapes-vae' with file 'shapes-vae\.pt'") as err:
        manifest_entry("shapes-vae", weights)
    assert err.value.field == "weights"
