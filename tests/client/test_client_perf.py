"""``camserve perf``: its statistics (against numpy), its bad-input messages, its bounds and concurrency (against the
in-process fake, which counts what it receives), and its levels, JSON file and error counting against the real
TorchServe of the session (tests/conftest.py)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from camserve import _perfstats as stats
from camserve import cli
from conftest import FakeServer, free_port
from PIL import Image

SHAPES = "shapes-classifier"
VAE = "shapes-vae"


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(["perf", *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# ---- statistics ----


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_percentiles_match_numpy(n: int) -> None:
    values = list(np.random.default_rng(n).exponential(30.0, n))
    for q in (0, 1, 50, 90, 99, 99.9, 100):
        assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12)


def test_percentile_rejects_nothing_and_bad_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        stats.percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        stats.percentile([1.0], 101)


def test_level_summary_figures() -> None:
    level = stats.Level("explain", 4, 2, wall_s=2.0)
    for i in range(10):
        level.add_ok(10.0 + i, 1000 + i, (0.5, 5.0 + i, 0.25, 1 + i % 3), 2)
    level.add_error("DEADLINE_EXCEEDED", 100.0)
    level.add_error("UNAVAILABLE", None)
    s = level.summary()
    lat = [10.0 + i for i in range(10)] + [100.0]
    assert s["requests"] == 12 and s["ok"] == 10
    assert s["errors"] == {"DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 1}
    assert s["requests_per_s"] == pytest.approx(5.0) and s["images_per_s"] == pytest.approx(10.0)
    assert s["latency_ms"] == {
        "p50": pytest.approx(np.percentile(lat, 50)),
        "p90": pytest.approx(np.percentile(lat, 90)),
        "p99": pytest.approx(np.percentile(lat, 99)),
        "max": 100.0,
        "mean": pytest.approx(np.mean(lat)),
    }
    assert s["response_bytes_mean"] == pytest.approx(1004.5)
    server = s["server"]
    assert isinstance(server, dict)
    assert server["explain_ms_mean"] == pytest.approx(9.5) and server["decode_ms_mean"] == pytest.approx(0.5)
    assert server["batch_size_mean"] == pytest.approx(np.mean([1 + i % 3 for i in range(10)]))
    assert server["batch_size_p50"] == 2.0
    text = stats.table([s])
    assert "DEADLINE_EXCEEDED 1, UNAVAILABLE 1" in text and "5.0" in text and "1,004" in text
    header, rule, row, *rest = stats.table([s], markdown=True).splitlines()
    assert header.startswith("| mode | conc |") and rule.startswith("|---|---:|")
    assert row.startswith("| explain | 4 | 12 | 2 | 5.0 | 10.0 |") and header.count("|") == rule.count("|")
    assert rest == ["errors at explain c=4: DEADLINE_EXCEEDED 1, UNAVAILABLE 1"]


def test_level_with_no_answers_has_no_figures_and_ratio_is_per_level() -> None:
    failed = stats.Level("explain", 1, 1, wall_s=1.0)
    failed.add_error("INVALID_ARGUMENT", 3.0)
    s = failed.summary()
    assert s["requests_per_s"] == 0.0 and s["response_bytes_mean"] is None
    assert "-" in stats.table([s]).splitlines()[1]
    explain, predict = stats.Level("explain", 2, 1, wall_s=1.0), stats.Level("predict", 2, 1, wall_s=1.0)
    for _ in range(3):
        explain.add_ok(1.0, 10, (0.0, 1.0, 0.0, 1), 1)
    for _ in range(4):
        predict.add_ok(1.0, 10, (0.0, 1.0, 0.0, 1), 1)
    assert stats.ratios([explain.summary(), predict.summary(), s]) == {2: pytest.approx(0.75)}


def test_option_parsers() -> None:
    assert stats.parse_concurrency("1, 4,16") == [1, 4, 16]
    assert stats.parse_duration("30s") == 30.0 and stats.parse_duration("500ms") == 0.5
    assert stats.parse_duration("2m") == 120.0 and stats.parse_duration("1.5") == 1.5
    assert stats.parse_size("224x160") == (224, 160)


# ---- bad command lines: exit 2 with a message, before any connection ----


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "1,,4"], "comma-separated list of positive integers"),
        (["--concurrency", "0"], "between 1 and 1024"),
        (["--concurrency", "1,100000"], "between 1 and 1024"),
        (["--concurrency", "2,2"], "twice"),
        (["--concurrency", "-1"], "comma-separated"),
        (["--synthetic", "64"], "WIDTHxHEIGHT"),
        (["--synthetic", "0x64"], "between 1 and 8192"),
        (["--synthetic", "99999x9"], "between 1 and 8192"),
        (["--requests", "0"], "--requests must be between 1"),
        (["--requests", "-5"], "--requests must be between 1"),
        (["--duration", "0s"], "above 0"),
        (["--duration", "-1"], "--duration must be a number"),
        (["--duration", "2d"], "--duration must be a number"),
        (["--duration", "48h"], "at most 24h"),
        (["--deadline", "0"], "--deadline must be above 0"),
        (["--batch-images", "0"], "--batch-images must be between 1"),
        (["--warmup", "-1"], "--warmup must be between 0"),
        (["--images", "no/such/dir"], "no such directory"),
        (["--json", "no/such/dir/out.json"], "--json: no such directory"),
    ],
)
def test_bad_input_is_exit_2_with_message(args: list[str], message: str) -> None:
    code, out, err = run("--model", SHAPES, "--address", f"127.0.0.1:{free_port()}", *args)
    assert code == cli.EXIT_USAGE, err
    assert message in err and out == ""


def test_images_dir_without_images_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    code, _, err = run("--model", SHAPES, "--address", f"127.0.0.1:{free_port()}", "--images", str(tmp_path))
    assert code == 2 and "no image files" in err


def test_argparse_errors_are_exit_2() -> None:
    assert run("--concurrency", "1")[0] == 2  # --model is required
    assert run("--model", SHAPES, "--requests", "many")[0] == 2


# ---- bounds and concurrency, counted by the fake server ----


def _fake_args(fake: FakeServer, *extra: str) -> list[str]:
    return ["--model", SHAPES, "--address", fake.address, "--synthetic", "16x12", *extra]


def test_requests_bound_is_exact_and_concurrency_is_real(fake: FakeServer, tmp_path: Path) -> None:
    fake.delay = 0.05
    report = tmp_path / "perf.json"
    code, out, _ = run(
        *_fake_args(fake, "--concurrency", "1,3", "--requests", "7", "--warmup", "3", "--json", str(report))
    )
    assert code == 0, out
    assert fake.calls == 3 + 7 + 7  # the warm-up (3, at the largest level), then exactly 7 per level
    assert fake.max_in_flight == 3
    levels = json.loads(report.read_text())["levels"]
    assert [(lv["concurrency"], lv["requests"], lv["ok"]) for lv in levels] == [(1, 7, 7), (3, 7, 7)]
    assert levels[1]["requests_per_s"] > 1.8 * levels[0]["requests_per_s"]  # 3 in flight, 50 ms each
    assert levels[0]["server"]["explain_ms_mean"] == pytest.approx(20.0)  # what the fake's timing says


def test_duration_bound_stops_in_time(fake: FakeServer, tmp_path: Path) -> None:
    fake.delay = 0.1
    report = tmp_path / "perf.json"
    began = time.monotonic()
    code, _, _ = run(
        *_fake_args(fake, "--concurrency", "2", "--duration", "600ms", "--warmup", "0", "--json", str(report))
    )
    took = time.monotonic() - began
    [level] = json.loads(report.read_text())["levels"]
    assert code == 0
    assert 0.6 <= level["wall_s"] < 0.6 + 0.1 + 0.5  # no new request after 600 ms; the last ones are awaited
    assert 6 <= level["requests"] <= 14 and fake.calls == level["requests"]
    assert took < 5.0


def test_batch_images_sends_k_images_per_request(fake: FakeServer, tmp_path: Path) -> None:
    report = tmp_path / "perf.json"
    code, _, _ = run(
        *_fake_args(
            fake, "--concurrency", "1", "--requests", "3", "--batch-images", "4", "--warmup", "0", "--json", str(report)
        )
    )
    [level] = json.loads(report.read_text())["levels"]
    assert code == 0 and [len(r.images) for r in fake.requests] == [4, 4, 4]
    assert level["images_per_s"] == pytest.approx(4 * level["requests_per_s"])


def test_transport_errors_are_counted_by_code(fake: FakeServer, tmp_path: Path) -> None:
    import grpc

    fake.abort_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    report = tmp_path / "perf.json"
    code, out, err = run(
        *_fake_args(fake, "--concurrency", "2", "--requests", "4", "--warmup", "0", "--json", str(report))
    )
    assert code == 1 and "every measured request failed" in err
    assert "errors at explain c=2: RESOURCE_EXHAUSTED 4" in out
    assert json.loads(report.read_text())["levels"][0]["errors"] == {"RESOURCE_EXHAUSTED": 4}


def test_progress_lines_are_plain_when_not_a_terminal(fake: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from camserve import perf

    monkeypatch.setattr(perf, "PROGRESS_PLAIN_S", 0.1)
    fake.delay = 0.05
    code, _, err = run(*_fake_args(fake, "--concurrency", "1", "--duration", "450ms", "--warmup", "0"))
    lines = err.splitlines()
    assert code == 0 and 1 <= len(lines) <= 6
    assert all(
        line.startswith("camserve perf: explain c=1: ") and "\r" not in line and "\x1b" not in line for line in lines
    )


# ---- the real server ----


@pytest.fixture(scope="module")
def server(camserve_server: Any) -> Any:
    camserve_server.require(SHAPES)
    return camserve_server


def _conn(server: Any) -> list[str]:
    return ["--address", server.address, "--token-file", str(server.key_file)]


@pytest.mark.integration
def test_levels_json_and_compare_predict_against_the_server(server: Any, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64 + 8 * i, 64), (40 * i, 120, 200)).save(images / f"img{i}.png")
    report = tmp_path / "perf.json"
    code, out, err = run(
        "--model", SHAPES, *_conn(server), "--method", "gradcam", "--concurrency", "1,2", "--requests", "6",
        "--images", str(images), "--compare-predict", "--json", str(report), "--warmup", "2",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(report.read_text())
    levels = data["levels"]
    assert [(lv["mode"], lv["concurrency"]) for lv in levels] == [
        ("explain", 1), ("predict", 1), ("explain", 2), ("predict", 2)
    ]  # fmt: skip
    for lv in levels:
        assert lv["requests"] == lv["ok"] == 6 and lv["errors"] == {}
        assert lv["requests_per_s"] > 0 and lv["images_per_s"] == pytest.approx(lv["requests_per_s"])
        lat = lv["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert lv["response_bytes_mean"] > 100
        assert lv["server"]["explain_ms_mean"] > 0 and lv["server"]["batch_size_mean"] >= 1
    assert data["images"].endswith("(3 files)") and data["predict_method"] == "cam"
    assert set(data["explain_over_predict"]) == {"1", "2"}
    rows = [
        line.split()
        for line in out.splitlines()
        if line.startswith(("explain ", "predict ")) and "throughput" not in line
    ]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("explain", "1", "6"),
        ("predict", "1", "6"),
        ("explain", "2", "6"),
        ("predict", "2", "6"),
    ]
    assert "explain / predict throughput at c=2:" in out


@pytest.mark.integration
def test_invalid_mix_is_counted_by_code_not_a_crash(server: Any, tmp_path: Path) -> None:
    report = tmp_path / "perf.json"
    code, out, err = run(
        "--model", SHAPES, *_conn(server), "--method", "gradcam", "--method", "no-such-method",
        "--concurrency", "2", "--requests", "4", "--warmup", "0", "--json", str(report),
    )  # fmt: skip
    assert code == 1 and "every measured request failed" in err
    assert json.loads(report.read_text())["levels"][0]["errors"] == {"INVALID_ARGUMENT": 4}
    assert "errors at explain c=2: INVALID_ARGUMENT 4" in out
    code, out, _ = run(
        "--model", SHAPES, *_conn(server), "--concurrency", "1", "--requests", "3", "--warmup", "0",
        "--deadline", "0.001",
    )  # fmt: skip
    assert code == 1 and "DEADLINE_EXCEEDED 3" in out


@pytest.mark.integration
def test_compare_predict_refuses_a_model_without_a_predictions_only_request(server: Any) -> None:
    server.require(VAE)
    code, _, err = run("--model", VAE, *_conn(server), "--requests", "1", "--compare-predict")
    assert code == 2 and "has no predictions-only request" in err
