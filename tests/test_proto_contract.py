"""The wire contract under buf: our protos pass ``buf lint``, and nothing served breaks the released image.

buf comes from the ``buf-bin`` package of requirements-dev.txt, found in the running interpreter's scripts folder
(the project venv's bin) or else on PATH. ``proto/released/image.txtpb`` is the descriptor image of the last
released contract (see proto/README.md for when and how it is regenerated).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

PROTO = Path(__file__).resolve().parents[1] / "proto"
RELEASED = PROTO / "released" / "image.txtpb"
EXPLAIN = Path("camserve") / "v1" / "explain.proto"


def _buf() -> str:
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which("buf", path=folder)
        if found:
            return found
    found = shutil.which("buf")
    if found is None:
        pytest.skip("buf is not installed (pip install -r requirements-dev.txt brings buf-bin)")
    return found


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_buf(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _copy_protos(dest: Path) -> Path:
    """The proto tree without the generated Python, to change one file of it."""
    shutil.copytree(PROTO, dest, ignore=shutil.ignore_patterns("camserve_proto", "__pycache__", "*.py", "*.toml"))
    return dest


def test_buf_lint_passes() -> None:
    result = _run("lint", cwd=PROTO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_the_released_image() -> None:
    assert RELEASED.is_file(), "proto/released/image.txtpb is missing: build it as proto/README.md says"
    result = _run("breaking", "--against", str(RELEASED), cwd=PROTO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_released_image_covers_torchserves_protos_too() -> None:
    text = RELEASED.read_text()
    for name in ("camserve/v1/explain.proto", "inference.proto", "management.proto"):
        assert name in text, name


def test_a_renumbered_field_is_a_breaking_change(tmp_path: Path) -> None:
    copy = _copy_protos(tmp_path / "proto")
    source = (copy / EXPLAIN).read_text()
    assert "  float value_max = 5;\n" in source
    (copy / EXPLAIN).write_text(source.replace("  float value_max = 5;\n", "  float value_max = 10;\n"))
    result = _run("breaking", "--against", str(RELEASED), cwd=copy)
    assert result.returncode != 0
    assert "value_max" in result.stdout + result.stderr, result.stdout + result.stderr


def test_an_added_field_is_not_a_breaking_change(tmp_path: Path) -> None:
    copy = _copy_protos(tmp_path / "proto")
    source = (copy / EXPLAIN).read_text()
    (copy / EXPLAIN).write_text(source.replace("  reserved 7 to 9;\n", "  reserved 7 to 9;\n  float extra = 10;\n", 1))
    assert "extra = 10" in (copy / EXPLAIN).read_text()
    result = _run("breaking", "--against", str(RELEASED), cwd=copy)
    assert result.returncode == 0, result.stdout + result.stderr
