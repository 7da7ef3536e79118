"""The service benchmark's pure parts: level figures, ratios to the right baseline, tables, targets, log and /proc
parsing, and camserve's timing read from an answer (no server: benchmarks/service_bench.py itself is not timed here).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
from camserve_proto.camserve.v1 import explain_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from _service_cpu import CpuSampler, role_of
from _service_logs import MetricsTail, parse_metrics
from _service_report import checks, server_timing
from _service_stats import Level, baseline_of, breakdown_table, cpu_table, ratio_table, summarise


def _level(contestant: str, path: str, c: int, requests: int, seconds: float, model: str = "demo") -> Level:
    return Level(model, contestant, path, c, [10.0 + i for i in range(requests)], [100] * requests, seconds)


def test_summary_throughput_percentiles_and_bytes() -> None:
    level = Level("demo", "c", "direct", 8, [10.0, 20.0, 30.0, 40.0, 50.0], [700, 800, 900, 800, 800], 2.0,
                  Counter({"UNAVAILABLE": 1}), [{"decode_ms": 1.0, "explain_ms": 3.0, "encode_ms": 0.5,
                                                 "batch_size": 8.0}] * 2)  # fmt: skip
    s = summarise(level)
    assert s["throughput"] == pytest.approx(2.5)
    assert s["p50_ms"] == pytest.approx(30.0)
    assert s["p99_ms"] == pytest.approx(49.6)  # numpy's linear interpolation: 40 + 0.96 * 10
    assert s["bytes"] == 800
    assert s["errors"] == {"UNAVAILABLE": 1}
    assert s["server_explain_ms"] == pytest.approx(3.0)
    assert s["server_batch_size"] == pytest.approx(8.0)


def test_merge_adds_rounds() -> None:
    first, second = _level("a", "direct", 8, 4, 1.0), _level("a", "direct", 8, 6, 2.0)
    first.torchserve, second.torchserve = {"QueueTime": [1.0]}, {"QueueTime": [3.0], "PredictionTime": [9.0]}
    first.cpu, second.cpu = {"workers": 0.5}, {"workers": 1.5}
    first.merge(second)
    assert len(first.latencies_ms) == 10 and first.seconds == 3.0
    s = summarise(first)
    assert s["throughput"] == pytest.approx(10 / 3)
    assert s["ts_QueueTime_ms"] == pytest.approx(2.0) and s["ts_batches"] == 1
    assert s["cpu_workers_ms"] == pytest.approx(200.0)  # 2 CPU seconds over 10 requests


def test_an_empty_level_has_no_figures() -> None:
    s = summarise(Level("demo", "e", "rest", 8, seconds=1.0, errors=Counter({"HTTP 503": 3})))
    assert s["throughput"] == 0.0 and s["p50_ms"] is None and s["bytes"] is None


def test_ratios_use_plain_direct_and_the_vae_one_region_row() -> None:
    levels = [
        _level("a", "direct", 8, 100, 1.0), _level("a", "gateway", 8, 50, 1.0), _level("c", "gateway", 8, 90, 1.0),
        _level("a", "direct", 1, 10, 1.0), _level("vae-1", "direct", 8, 40, 1.0, "vae"),
        _level("vae-16", "direct", 8, 10, 1.0, "vae"), _level("vae-16", "gateway", 8, 10, 1.0, "vae"),
    ]  # fmt: skip
    summaries = [summarise(level) for level in levels]
    assert baseline_of(summaries[2], summaries) == pytest.approx(100.0)  # not the gateway's (a), not c=1
    assert baseline_of(summaries[5], summaries) == pytest.approx(40.0)
    assert baseline_of(summaries[6], summaries) is None  # no 1-region row on that path
    table = ratio_table(summaries, {"c": "(c) + gradcam"})
    row = next(line for line in table.splitlines() if "(c) + gradcam" in line)
    assert "0.90x" in row
    markdown = ratio_table(summaries, {}, markdown=True).splitlines()
    assert markdown[0].startswith("| model |") and markdown[1].startswith("|---|") and len(markdown) == 2 + 7


def test_breakdown_subtracts_queue_and_worker_time() -> None:
    level = _level("c", "direct", 8, 3, 1.0)  # latencies 10, 11, 12: p50 11
    level.torchserve = {"QueueTime": [2.0], "PredictionTime": [6.0]}
    level.server = [{"decode_ms": 0.25, "explain_ms": 0.5, "encode_ms": 0.05, "batch_size": 3.0}]
    row = breakdown_table([summarise(level)]).splitlines()[1].split()
    assert row[4:] == ["11.0", "2.0", "6.0", "3.0", "0.25", "0.5", "0.05", "3.0"]


def test_cpu_table_per_request() -> None:
    level = _level("a", "gateway", 8, 4, 1.0)
    level.cpu = {"client": 0.004, "gateway": 0.002, "worker_faults": 10.0}
    row = cpu_table([summarise(level)], ("client", "gateway")).splitlines()[1].split()
    assert row[4:] == ["1.00", "0.50", "1.50", "2"]  # 10 faults over 4 requests: 2.5, shown rounded
    assert cpu_table([summarise(_level("a", "direct", 8, 4, 1.0))], ("client",)).count("\n") == 0  # header only


def test_checks_state_each_target() -> None:
    levels = [_level("a", "direct", 8, 100, 1.0), _level("c", "direct", 8, 90, 1.0),
              _level("d", "direct", 8, 30, 1.0), _level("e", "rest", 8, 4, 1.0),
              _level("c", "gateway", 8, 80, 1.0)]  # fmt: skip
    levels.append(Level("resnet50", "c", "direct", 1, [1.0], [3000], 1.0))
    text = checks([summarise(level) for level in levels])
    assert "camserve direct vs a direct: 0.90x  met" in text
    assert "camserve gateway vs a direct: 0.80x  NOT met" in text  # no (a) through the gateway: direct's
    assert "full bundle >= 0.35x plain TorchServe prediction, camserve direct vs a direct: 0.30x  NOT met" in text
    assert "20x TorchServe /explanations, camserve direct vs e rest: 22.50x  met" in text
    assert "gateway's own cost" not in text
    same_path = checks([summarise(level) for level in [*levels, _level("a", "gateway", 8, 80, 1.0)]])
    assert "camserve gateway vs a gateway: 1.00x  met" in same_path
    assert "plain TorchServe through it at 0.80x of direct" in same_path
    assert "3,000 bytes (< 2 KB)  NOT met" in text
    assert "not measured" in checks([])


def test_metrics_lines_are_parsed(tmp_path: Path) -> None:
    lines = (
        "2026-12-03T07:48:42,766 - QueueTime.Milliseconds:24.0|#Level:Host|#hostname:vm,timestamp:1\n"
        "2026-12-03T07:48:42,766 - WorkerThreadTime.Milliseconds:10.0|#Level:Host|#hostname:vm,timestamp:1\n"
        "2026-12-03T07:48:42,766 - Requests2XX.Count:1.0|#Level:Host|#hostname:vm,timestamp:1\n"
    )
    assert parse_metrics(lines) == {"PredictionTime": [], "QueueTime": [24.0], "WorkerThreadTime": [10.0]}
    (tmp_path / "ts_metrics.log").write_text("old - QueueTime.Milliseconds:99.0|#x\n", encoding="utf-8")
    tail = MetricsTail(tmp_path)
    tail.mark()
    with (tmp_path / "ts_metrics.log").open("a", encoding="utf-8") as log:
        log.write(lines)
    (tmp_path / "model_metrics.log").write_text("t - PredictionTime.ms:442.64|#ModelName:m\n", encoding="utf-8")
    assert tail.read() == {"PredictionTime": [442.64], "QueueTime": [24.0], "WorkerThreadTime": [10.0]}


def test_roles_by_session() -> None:
    sessions = {"torchserve": 100, "gateway": 200}
    assert role_of("java", 100, sessions) == "frontend"
    assert role_of("python3", 100, sessions) == "workers"
    assert role_of("python3", 200, sessions) == "gateway"
    assert role_of("python3", 300, sessions) is None
    assert CpuSampler.per_request_ms(dict.fromkeys(("client", "gateway", "frontend", "workers"), 0.0),
                                     {"client": 0.01, "gateway": 0.0, "frontend": 0.02, "workers": 0.03}, 10) == \
        pytest.approx({"client": 1.0, "gateway": 0.0, "frontend": 2.0, "workers": 3.0})  # fmt: skip
    assert CpuSampler.per_request_ms({}, {}, 0) == {}


def test_server_timing_from_an_answer() -> None:
    response = explain_pb2.ExplainResponse(timing=explain_pb2.Timing(decode_ms=1.5, explain_ms=4.0, batch_size=8))
    assert server_timing(response.SerializeToString()) == {
        "decode_ms": 1.5, "explain_ms": 4.0, "encode_ms": 0.0, "batch_size": 8.0,
    }  # fmt: skip
    assert server_timing(b'[{"circle": 0.9}]') is None  # the stock handler's JSON
    assert server_timing(explain_pb2.ExplainResponse().SerializeToString()) is None
