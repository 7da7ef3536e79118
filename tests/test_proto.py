"""The generated protobuf code is the output of proto/generate.py for the committed .proto files."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "_gen"
    subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--out", str(out)], check=True)
    committed = ROOT / "proto" / "camserve_proto"
    fresh = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    existing = sorted(
        p.relative_to(committed) for p in committed.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == existing, "generated file set differs: run python proto/generate.py"
    stale = [str(p) for p in fresh if not filecmp.cmp(out / p, committed / p, shallow=False)]
    assert not stale, f"stale generated code {stale}: run python proto/generate.py"
