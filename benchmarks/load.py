"""Load and soak: the gRPC API driven by the async SDK at rising concurrency, with 10 % invalid requests mixed in.

Run ``.venv/bin/python benchmarks/load.py`` (full: concurrency 1, 4, 16 and, outside CI, 64; at most 2,000
requests or 120 s per level) or ``--short`` (1, 4, 16; 200 requests or 25 s per level; under 2 minutes with the
server's start). ``--help`` lists the options. The script starts its own server on free loopback ports through
``deploy.serverctl`` (building the archives unless ``--model-store`` has them) and calls ``server.endpoints.grpc``.

Every call has a 10 s deadline and no retries, so every failure is counted. Request ``i`` is invalid when
``i % 10 == 9`` (cycling through kinds whose expected code is known), else valid (a demo image, Grad-CAM).
Printed per level: p50/p90/p99 latency, throughput, outcomes by code, the worker's RSS (``/proc/<pid>/status``) at
the level's start, middle and end, and its pids. Criteria (exit status 1 when one fails):

- zero errors on valid requests up to concurrency 16; invalid requests get only their expected codes;
- the worker pids never change (no crash, no restart);
- RSS growth from the middle to the end of a level under 50 MB;
- no leaked hooks: a probe image (Grad-CAM, guided backprop, saliency, float32 maps) sent alone before the first
  and after every level gets the same maps. The hook count itself lives inside the worker and is not exposed by
  the server; a leaked hook would change these maps (guided backprop's ReLU hooks would alter every gradient) or
  keep activations alive (RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import camserve  # noqa: E402

from deploy import serverctl  # noqa: E402

MODEL = "shapes-classifier"
RSS_GROWTH_LIMIT_MB = 50.0
ZERO_ERROR_UP_TO = 16
INVALID: tuple[tuple[str, Callable[[Sequence[bytes]], dict[str, Any]], str], ...] = (
    ("random-bytes", lambda _images: {"images": bytes(range(256)) * 8}, "INVALID_ARGUMENT"),
    ("truncated-png", lambda images: {"images": images[0][:100]}, "INVALID_ARGUMENT"),
    ("unknown-method", lambda _images: {"methods": ["telepathy"]}, "INVALID_ARGUMENT"),
    ("unknown-layer", lambda _images: {"layers": ["no.such.layer"]}, "NOT_FOUND"),
    ("top-k-over-classes", lambda _images: {"top_k": 7}, "INVALID_ARGUMENT"),
)
"""(kind, what replaces the valid call's arguments, the code it must get)."""


@dataclass
class Level:
    """What one concurrency level measured."""

    concurrency: int
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    valid: Counter[str] = field(default_factory=Counter)
    invalid: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    rss_mb: dict[str, float] = field(default_factory=dict)
    pids: dict[str, list[int]] = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"concurrency": self.concurrency, "requests": self.requests, "seconds": self.seconds}
        out.update(valid=dict(self.valid), invalid=dict(self.invalid), unexpected=dict(self.unexpected))
        out.update(rss_mb=self.rss_mb, pids=self.pids)
        out.update(p50_ms=self.percentile(50), p90_ms=self.percentile(90), p99_ms=self.percentile(99))
        out["throughput_rps"] = self.throughput
        return out


# ---------------------------------------------------------------------------------------------- the server
class Worker:
    """The model's worker processes, read from the management API and /proc."""

    def __init__(self, server: serverctl.Server) -> None:
        self.server = server

    def pids(self) -> list[int]:
        keys = self.server.keys
        headers = {"Authorization": f"Bearer {keys.management}"} if keys else {}
        url = f"{self.server.endpoints.management}/models/{MODEL}"
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as reply:
            return sorted(int(w["pid"]) for w in json.loads(reply.read())[0]["workers"])

    def rss_mb(self) -> float:
        """Resident memory of the workers, MB (``VmRSS``)."""
        total_kb = 0
        for pid in self.pids():
            status = Path(f"/proc/{pid}/status").read_text()
            total_kb += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))
        return total_kb / 1024.0

    def snapshot(self, level: Level, when: str) -> None:
        level.rss_mb[when] = round(self.rss_mb(), 1)
        level.pids[when] = self.pids()


def start_server(model_store: Path | None, run_dir: Path) -> serverctl.Server:
    if model_store is None:
        from model_store import archive

        model_store = run_dir / "archives"
        archive.build(MODEL, model_store)
    return serverctl.Server.start(
        run_dir=run_dir / "run",
        model_store=model_store,
        models=[MODEL],
        overrides=serverctl.free_port_overrides("127.0.0.1"),
        timeout=300,
    )


# --------------------------------------------------------------------------------------------------- calls
def demo_images(count: int) -> list[bytes]:
    import io

    from PIL import Image

    from model_store import data

    out = []
    for image in data.make_batch("test", 2000, count).images:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def call_arguments(i: int, images: Sequence[bytes]) -> tuple[dict[str, Any], str | None]:
    """The explain arguments of request ``i`` and its expected error code (None = valid)."""
    args: dict[str, Any] = {"images": images[i % len(images)], "model": MODEL, "methods": ["gradcam"]}
    if i % 10 != 9:
        return args, None
    _kind, change, code = INVALID[(i // 10) % len(INVALID)]
    args.update(change(images))
    return args, code


async def run_level(
    client: camserve.AsyncClient, worker: Worker, concurrency: int, budget: int, seconds: float, images: list[bytes]
) -> Level:
    level = Level(concurrency)
    counter = iter(range(budget))
    started = time.monotonic()
    ends = started + seconds
    worker.snapshot(level, "start")
    middle = asyncio.Event()

    async def one_client() -> None:
        for i in counter:
            if time.monotonic() > ends:
                return
            if i == budget // 2 and not middle.is_set():
                middle.set()
                await asyncio.to_thread(worker.snapshot, level, "middle")
            args, expected = call_arguments(i, images)
            t0 = time.perf_counter()
            try:
                await client.explain(**args)
                code = "OK"
            except camserve.CamserveError as err:
                code = type(err).default_code
            level.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
            level.requests += 1
            if expected is None:
                level.valid[code] += 1
            else:
                level.invalid[code] += 1
                if code != expected:
                    level.unexpected[f"{expected}->{code}"] += 1

    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    level.seconds = time.monotonic() - started
    if not middle.is_set():  # stopped by the time cap before half the budget
        worker.snapshot(level, "middle")
    worker.snapshot(level, "end")
    return level


async def probe(client: camserve.AsyncClient, image: bytes) -> dict[str, np.ndarray]:
    result = await client.explain(
        image, model=MODEL, methods=["gradcam", "guided_backprop", "saliency"], encoding="float32"
    )
    return {f"{k.method}/{k.layer}/{k.target}": m.array for k, m in result.maps.items()}


def same_maps(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


# -------------------------------------------------------------------------------------------------- report
def failures(levels: Sequence[Level], probes_equal: Sequence[bool]) -> list[str]:
    """The criteria (module docstring) that the run broke; empty when it passed."""
    out = []
    first_pids = levels[0].pids["start"] if levels else []
    for lv in levels:
        valid_errors = sum(n for code, n in lv.valid.items() if code != "OK")
        if lv.concurrency <= ZERO_ERROR_UP_TO and valid_errors:
            out.append(f"concurrency {lv.concurrency}: {valid_errors} valid requests failed {dict(lv.valid)}")
        if lv.unexpected:
            out.append(f"concurrency {lv.concurrency}: unexpected codes for invalid requests {dict(lv.unexpected)}")
        if any(p != first_pids for p in lv.pids.values()):
            out.append(f"concurrency {lv.concurrency}: worker pids changed {lv.pids} (first {first_pids})")
        growth = lv.rss_mb["end"] - lv.rss_mb["middle"]
        if growth >= RSS_GROWTH_LIMIT_MB:
            out.append(f"concurrency {lv.concurrency}: RSS grew {growth:.1f} MB from the middle to the end")
    if not all(probes_equal):
        out.append(f"the probe's maps changed after a level (leaked hooks?): {list(probes_equal)}")
    return out


def table(levels: Sequence[Level]) -> str:
    head = (
        "| concurrency | requests | s | req/s | p50 ms | p90 ms | p99 ms | valid (by code) | invalid (by code) "
        "| RSS MB start / middle / end | worker pids |"
    )
    rows = [head, "|" + "---|" * 11]
    for lv in levels:
        codes = ", ".join(f"{c} {n}" for c, n in sorted(lv.valid.items()))
        bad = ", ".join(f"{c} {n}" for c, n in sorted(lv.invalid.items()))
        rss = " / ".join(f"{lv.rss_mb[k]:.0f}" for k in ("start", "middle", "end"))
        pids = ",".join(str(p) for p in lv.pids["end"])
        rows.append(
            f"| {lv.concurrency} | {lv.requests} | {lv.seconds:.1f} | {lv.throughput:.1f} | {lv.percentile(50):.0f} "
            f"| {lv.percentile(90):.0f} | {lv.percentile(99):.0f} | {codes} | {bad} | {rss} | {pids} |"
        )
    return "\n".join(rows)


async def drive(server: serverctl.Server, args: argparse.Namespace) -> tuple[list[Level], list[bool]]:
    images = demo_images(16)
    worker = Worker(server)
    levels: list[Level] = []
    probes_equal: list[bool] = []
    async with camserve.AsyncClient(
        server.endpoints.grpc, token_file=server.key_file, timeout=args.deadline, retries=0
    ) as client:
        reference = await probe(client, images[0])
        for concurrency in args.levels:
            level = await run_level(client, worker, concurrency, args.requests, args.seconds, images)
            levels.append(level)
            probes_equal.append(same_maps(reference, await probe(client, images[0])))
            print(
                f"concurrency {concurrency:>3}: {level.requests} requests in {level.seconds:.1f} s, "
                f"p50 {level.percentile(50):.0f} ms, p99 {level.percentile(99):.0f} ms",
                file=sys.stderr,
                flush=True,
            )
    return levels, probes_equal


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI version: 1, 4, 16; 200 requests or 25 s per level")
    parser.add_argument("--levels", type=int, nargs="+", help="concurrency levels (default: see --short)")
    parser.add_argument("--requests", type=int, help="at most this many requests per level (default 2000; 200)")
    parser.add_argument("--seconds", type=float, help="at most this long per level (default 120; 25)")
    parser.add_argument("--deadline", type=float, default=10.0, help="deadline of every call, s")
    parser.add_argument("--model-store", type=Path, help="folder with shapes-classifier.mar (default: build it)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    full_levels = [1, 4, 16] if os.environ.get("CI") else [1, 4, 16, 64]
    args.levels = args.levels or ([1, 4, 16] if args.short else full_levels)
    args.requests = args.requests or (200 if args.short else 2000)
    args.seconds = args.seconds or (25.0 if args.short else 120.0)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="camserve-load-") as tmp:
        server = start_server(args.model_store, Path(tmp))
        try:
            levels, probes_equal = asyncio.run(drive(server, args))
        finally:
            server.stop()
    print(table(levels))
    broken = failures(levels, probes_equal)
    print("criteria: " + ("all met" if not broken else "FAILED\n  " + "\n  ".join(broken)))
    if args.json is not None:
        summary = {"levels": [lv.summary() for lv in levels], "probes_equal": probes_equal, "failures": broken}
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
