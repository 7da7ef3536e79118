"""Layout rules over the repo's own Python: no file over 450 lines (split it by job), and every module outside
tests/ starts with a docstring saying its one job. Generated code (proto/camserve_proto/) is not ours to shape.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("handlers", "client", "proto", "model_store", "deploy", "benchmarks", "tests")
GENERATED = ("proto/camserve_proto",)
SKIPPED_PARTS = {".venv", "build", "dist", "__pycache__", "node_modules"}
MAX_LINES = 450


def _ours(root: Path = ROOT) -> list[Path]:
    """Every non-generated .py file under the project's folders (build output and caches left out)."""
    found = []
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            parts = set(path.relative_to(root).parts)
            if parts & SKIPPED_PARTS or any(p.endswith(".egg-info") for p in parts):
                continue
            if any(path.is_relative_to(root / g) for g in GENERATED):
                continue
            found.append(path)
    return found


def too_long(path: Path, limit: int = MAX_LINES) -> int | None:
    """The file's line count when it is over ``limit``, else None."""
    count = len(path.read_text(encoding="utf-8").splitlines())
    return count if count > limit else None


def lacks_docstring(path: Path) -> bool:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))) is None


def test_every_folder_has_files_to_check() -> None:
    files = _ours()
    for folder in FOLDERS:
        assert any(p.is_relative_to(ROOT / folder) for p in files), folder
    assert not any(p.is_relative_to(ROOT / GENERATED[0]) for p in files)


def test_no_source_file_is_over_the_line_limit() -> None:
    over = {str(p.relative_to(ROOT)): n for p in _ours() if (n := too_long(p)) is not None}
    assert not over, f"over {MAX_LINES} lines (split by job): {over}"


def test_every_module_outside_tests_has_a_docstring() -> None:
    missing = [str(p.relative_to(ROOT)) for p in _ours() if not p.is_relative_to(ROOT / "tests") and lacks_docstring(p)]
    assert not missing, f"modules without a docstring saying their job: {missing}"


@pytest.mark.parametrize(
    ("text", "long", "undocumented"),
    [
        ('"""Job."""\n' + "x = 1\n" * 449, False, False),
        ('"""Job."""\n' + "x = 1\n" * 450, True, False),
        ("x = 1\n", False, True),
        ("# a comment, no docstring\nimport os\n", False, True),
        ("", False, True),
    ],
)
def test_the_checks_themselves(tmp_path: Path, text: str, long: bool, undocumented: bool) -> None:
    path = tmp_path / "module.py"
    path.write_text(text)
    assert (too_long(path) is not None) is long
    assert lacks_docstring(path) is undocumented


def test_build_output_and_generated_code_are_left_out(tmp_path: Path) -> None:
    for rel in ("handlers/build/lib/x.py", "proto/camserve_proto/x_pb2.py", "client/a.egg-info/x.py", "tests/t.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    found = [p.relative_to(tmp_path).as_posix() for p in _ours(tmp_path)]
    assert found == ["tests/t.py"]
