"""Under CI every test must run: the suite's conftest turns a skip into a failure there, and only there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SAMPLE = '''
import pytest

def test_skips():
    pytest.skip("model not served")

@pytest.mark.xfail(strict=True, reason="a documented bug")
def test_xfails():
    assert False

def test_passes():
    pass
'''


def run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("ci", ["true", "TRUE"])
def test_a_skip_fails_under_ci(tmp_path: Path, ci: str) -> None:
    done = run(tmp_path, ci)
    assert done.returncode == 1, done.stdout
    assert "1 failed, 1 passed, 1 xfailed" in done.stdout, done.stdout
    assert "skipped under CI, where every test must run: Skipped: model not served" in done.stdout


@pytest.mark.parametrize("ci", [None, "false"])
def test_a_skip_stays_a_skip_elsewhere(tmp_path: Path, ci: str | None) -> None:
    done = run(tmp_path, ci)
    assert done.returncode == 0, done.stdout
    assert "1 passed, 1 skipped, 1 xfailed" in done.stdout, done.stdout
