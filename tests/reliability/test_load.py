"""The short load run (benchmarks/load.py --short) against a server of its own: its criteria hold and it reports.

The script starts its own server from the session's archives (so the session server's worker is not the one
loaded), drives concurrency 1, 4 and 16 with the async SDK (10 s deadlines, 10 % invalid requests) and checks its
criteria itself; this test runs it as a user would and reads its JSON summary.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import CLASSIFIER

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load.py"


def test_short_load_run_meets_its_criteria(camserve_server: Any, tmp_path: Path) -> None:
    camserve_server.require(CLASSIFIER)
    summary_file = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--short", "--model-store", str(camserve_server.archive_dir),
         "--json", str(summary_file)],
        capture_output=True, text=True, timeout=420, check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}"
    assert "| concurrency | requests |" in run.stdout and "criteria: all met" in run.stdout
    summary = json.loads(summary_file.read_text())
    assert summary["failures"] == [] and all(summary["probes_equal"])
    levels = summary["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 4, 16]
    pids = {tuple(p) for lv in levels for p in lv["pids"].values()}
    assert len(pids) == 1  # one worker process throughout
    for lv in levels:
        assert 0 < lv["requests"] <= 200
        assert set(lv["valid"]) == {"OK"} and lv["valid"]["OK"] >= lv["requests"] * 0.85
        assert set(lv["invalid"]) <= {"INVALID_ARGUMENT", "NOT_FOUND"} and not lv["unexpected"]
        assert lv["p50_ms"] <= lv["p90_ms"] <= lv["p99_ms"] < 10_000
        assert set(lv["rss_mb"]) == {"start", "middle", "end"} and lv["rss_mb"]["end"] > 0
