"""The service benchmark's figures: what one measured level holds, its summary, the ratio table and the breakdown.

Pure Python (no server, no gRPC), unit-tested in tests/benchmarks: percentiles are camserve perf's (numpy's
linear interpolation), throughput is completed requests over the level's wall time, and every ratio compares
throughputs measured in the same run (interleaved rounds, see service_bench.py).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from camserve._perfstats import percentile

__all__ = ["Level", "breakdown_table", "cpu_table", "ratio_table", "summarise"]


@dataclass
class Level:
    """What one contestant measured at one concurrency (all rounds merged).

    Attributes:
        model: The ``--models`` key (demo, resnet50, vae).
        contestant: ``a`` .. ``e`` or a VAE row name (``vae-1``, ``vae-16``).
        path: ``direct`` (TorchServe's gRPC), ``gateway`` (camserve's gateway) or ``rest``.
        concurrency: Requests in flight.
        latencies_ms: One per completed request.
        response_bytes: Payload bytes of each completed request's answer.
        seconds: Wall time of the measured requests, summed over rounds.
        errors: Failed requests by status code.
        server: Per answer that carries camserve's timing: decode_ms, explain_ms, encode_ms, batch_size.
        torchserve: TorchServe's own metrics logged during the level (benchmarks/_service_logs.py): per batch
            PredictionTime, per job QueueTime and WorkerThreadTime, in ms.
        cpu: CPU seconds each process role used during the level (benchmarks/_service_cpu.py).
    """

    model: str
    contestant: str
    path: str
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    response_bytes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    server: list[Mapping[str, float]] = field(default_factory=list)
    torchserve: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Level) -> None:
        """Adds another round of the same contestant and level."""
        self.latencies_ms += other.latencies_ms
        self.response_bytes += other.response_bytes
        self.seconds += other.seconds
        self.errors += other.errors
        self.server += other.server
        for name, values in other.torchserve.items():
            self.torchserve.setdefault(name, []).extend(values)
        for role, seconds in other.cpu.items():
            self.cpu[role] = self.cpu.get(role, 0.0) + seconds

    @property
    def throughput(self) -> float:
        """Completed requests per second (0 when nothing completed)."""
        return len(self.latencies_ms) / self.seconds if self.seconds > 0 else 0.0


def _median_of(rows: Sequence[Mapping[str, float]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if key in r]
    return statistics.median(values) if values else None


def summarise(level: Level) -> dict[str, object]:
    """The figures of one level (the JSON rows and the tables' cells)."""
    lat = level.latencies_ms
    out: dict[str, object] = {
        "model": level.model,
        "contestant": level.contestant,
        "path": level.path,
        "concurrency": level.concurrency,
        "requests": len(lat),
        "seconds": round(level.seconds, 3),
        "throughput": level.throughput,
        "p50_ms": percentile(lat, 50) if lat else None,
        "p99_ms": percentile(lat, 99) if lat else None,
        "bytes": int(statistics.median(level.response_bytes)) if level.response_bytes else None,
        "errors": dict(level.errors),
    }
    for key in ("decode_ms", "explain_ms", "encode_ms", "batch_size"):
        out[f"server_{key}"] = _median_of(level.server, key)
    for name in ("PredictionTime", "QueueTime", "WorkerThreadTime"):
        values = level.torchserve.get(name) or []
        out[f"ts_{name}_ms"] = statistics.median(values) if values else None
    out["ts_batches"] = len(level.torchserve.get("PredictionTime") or [])
    for role, value in level.cpu.items():  # CPU seconds by role; page faults under "worker_faults"
        scale = 1.0 if role == "worker_faults" else 1000.0
        out[role if role == "worker_faults" else f"cpu_{role}_ms"] = value * scale / len(lat) if lat else None
    return out


def _cell(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _lay_out(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join(fmt.format(*r) for r in [header, *rows])


def baseline_of(summary: Mapping[str, object], summaries: Sequence[Mapping[str, object]]) -> float | None:
    """The throughput a row is compared with: (a) of the same model and concurrency; for a VAE row, its 1-region
    row on the same path and concurrency. None when that baseline was not measured (or measured nothing)."""
    vae = str(summary["contestant"]).startswith("vae-")
    for other in summaries:
        same = other["model"] == summary["model"] and other["concurrency"] == summary["concurrency"]
        if not same:
            continue
        wanted = ("vae-1", summary["path"]) if vae else ("a", "direct")
        if (other["contestant"], other["path"]) != wanted:
            continue
        value = other["throughput"]
        return float(value) if isinstance(value, (int, float)) and value > 0 else None
    return None


def ratio_table(summaries: Sequence[Mapping[str, object]], names: Mapping[str, str], markdown: bool = False) -> str:
    """Throughput, latency and bytes per level, with the ratio to the row's baseline (:func:`baseline_of`)."""
    header = ["model", "contestant", "path", "c", "requests", "req/s", "p50 ms", "p99 ms", "bytes", "vs (a)", "errors"]
    rows = []
    for s in summaries:
        base = baseline_of(s, summaries)
        throughput = float(s["throughput"])  # type: ignore[arg-type]
        ratio = f"{throughput / base:.2f}x" if base else "-"
        errors = s["errors"]
        error_text = ", ".join(f"{k} {v}" for k, v in errors.items()) if isinstance(errors, dict) and errors else "0"
        contestant = str(s["contestant"])
        rows.append([
            str(s["model"]), names.get(contestant, contestant), str(s["path"]), str(s["concurrency"]),
            _cell(s["requests"]), _cell(throughput), _cell(s["p50_ms"]), _cell(s["p99_ms"]), _cell(s["bytes"]),
            ratio, error_text,
        ])  # fmt: skip
    return _lay_out(header, rows, markdown)


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


def breakdown_table(summaries: Sequence[Mapping[str, object]], markdown: bool = False) -> str:
    """Where a request's time goes (medians): TorchServe's queue (the batching delay and the wait for a busy
    worker) and the worker's whole ``handle`` call for the batch, from TorchServe's metrics; for camserve's rows
    also the handler's own decode, engine and encode time per request (explain is the request's share of its
    group's engine call); the rest of the latency is outside TorchServe's queue and worker: gRPC, the gateway on its
    path, the frontend and the client.
    """
    header = ["model", "contestant", "path", "c", "p50 ms", "queue ms", "worker batch ms", "req/batch",
              "decode ms", "explain ms", "encode ms", "rest ms"]  # fmt: skip
    rows = []
    for s in summaries:
        p50, queue, worker = (_float(s.get(k)) for k in ("p50_ms", "ts_QueueTime_ms", "ts_PredictionTime_ms"))
        batches, requests = _float(s.get("ts_batches")), _float(s.get("requests"))
        per_batch = requests / batches if batches and requests else None
        rest = p50 - (queue or 0.0) - (worker or 0.0) if p50 is not None and worker is not None else None
        rows.append([
            str(s["model"]), str(s["contestant"]), str(s["path"]), str(s["concurrency"]), _cell(p50), _cell(queue),
            _cell(worker), _cell(per_batch), _cell(_float(s.get("server_decode_ms")), 2),
            _cell(_float(s.get("server_explain_ms"))), _cell(_float(s.get("server_encode_ms")), 2), _cell(rest),
        ])  # fmt: skip
    return _lay_out(header, rows, markdown)


def cpu_table(summaries: Sequence[Mapping[str, object]], roles: Sequence[str], markdown: bool = False) -> str:
    """CPU milliseconds per request by process role (the client, the gateway, TorchServe's frontend, workers) and the
    workers' page faults per request."""
    header = ["model", "contestant", "path", "c", *(f"{r} ms" for r in roles), "total ms", "worker faults"]
    rows = []
    for s in summaries:
        values = [_float(s.get(f"cpu_{r}_ms")) for r in roles]
        if all(v is None for v in values):
            continue
        total = sum(v for v in values if v is not None)
        faults = _cell(_float(s.get("worker_faults")), 0)
        rows.append([str(s["model"]), str(s["contestant"]), str(s["path"]), str(s["concurrency"]),
                     *(_cell(v, 2) for v in values), _cell(total, 2), faults])  # fmt: skip
    return _lay_out(header, rows, markdown)
