"""The service benchmark's report parts: the machine line, camserve's timing read from an answer, the targets.

Pure functions (tested in tests/benchmarks): :func:`checks` states each of the issue's targets as measured, met or
not, from the summaries of :mod:`benchmarks._service_stats`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path

from camserve_proto.camserve.v1 import explain_pb2

__all__ = ["checks", "machine_line", "server_timing"]

#: (name, numerator contestant, denominator contestant, least ratio) at concurrency 8 on the demo classifier.
RATIO_TARGETS = (
    ("prediction + gradcam >= 0.85x plain TorchServe prediction", "c", "a", 0.85),
    ("full bundle >= 0.35x plain TorchServe prediction", "d", "a", 0.35),
    ("prediction + gradcam >= 20x TorchServe /explanations", "c", "e", 20.0),
)
MAX_GRADCAM_BYTES = 2048


def machine_line() -> str:
    """nproc, CPU model, RAM, platform and the torch / TorchServe versions: the machine a table was measured on."""
    cpu = "unknown CPU"
    ram = "unknown RAM"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    except OSError:
        pass
    from importlib import metadata

    versions = []
    for package in ("torch", "torchserve"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} not installed")
    return f"{os.cpu_count()} CPUs ({cpu}), {ram}, {platform.system()} {platform.machine()}, {', '.join(versions)}"


def server_timing(payload: bytes) -> dict[str, float] | None:
    """camserve's handler timing from an ``ExplainResponse`` (None for other payloads or answers without it)."""
    try:
        response = explain_pb2.ExplainResponse.FromString(payload)
    except Exception:  # not protobuf (the stock handler's JSON)
        return None
    if not response.HasField("timing"):
        return None
    t = response.timing
    return {"decode_ms": t.decode_ms, "explain_ms": t.explain_ms, "encode_ms": t.encode_ms,
            "batch_size": float(t.batch_size)}  # fmt: skip


def _find(summaries: Sequence[Mapping[str, object]], model: str, contestant: str, path: str, c: int) -> float | None:
    for s in summaries:
        if (s["model"], s["contestant"], s["path"], s["concurrency"]) == (model, contestant, path, c):
            value = s["throughput"]
            return float(value) if isinstance(value, (int, float)) and value > 0 else None
    return None


def checks(summaries: Sequence[Mapping[str, object]]) -> str:
    """The issue's targets, each on every path measured: the ratio (or bytes), and met / NOT met.

    Like with like: camserve on a path is held to plain TorchServe's (a) on the same path (the gateway's rows to (a)
    through the gateway; (a) direct when (a) was not measured there), and to (e), which only exists on REST. The
    gateway's own cost is stated beside them: (a) through the gateway over (a) direct.
    """
    lines = ["targets (demo classifier, concurrency 8):"]
    for name, top, bottom, least in RATIO_TARGETS:
        for path in ("direct", "gateway"):
            above = _find(summaries, "demo", top, path, 8)
            if bottom == "e":
                below, against = _find(summaries, "demo", "e", "rest", 8), "rest"
            else:
                below, against = _find(summaries, "demo", bottom, path, 8), path
                if below is None:
                    below, against = _find(summaries, "demo", bottom, "direct", 8), "direct"
            if above is None or below is None:
                continue
            ratio = above / below
            verdict = "met" if ratio >= least else "NOT met"
            lines.append(f"  {name}, camserve {path} vs {bottom} {against}: {ratio:.2f}x  {verdict}")
    direct, gateway = (_find(summaries, "demo", "a", p, 8) for p in ("direct", "gateway"))
    if direct and gateway:
        lines.append(f"  (the gateway's own cost: plain TorchServe through it at {gateway / direct:.2f}x of direct)")
    sizes = [s["bytes"] for s in summaries if (s["model"], s["contestant"]) == ("resnet50", "c")]
    if sizes:
        largest = max(int(v) for v in sizes if isinstance(v, int))
        verdict = "met" if largest < MAX_GRADCAM_BYTES else "NOT met"
        lines.append(f"  resnet50 224x224 prediction + gradcam response: {largest:,} bytes (< 2 KB)  {verdict}")
    if len(lines) == 1:
        lines.append("  (not measured in this run: needs the demo model at concurrency 8)")
    return "\n".join(lines)
