"""``camserve perf``: a load generator for a camserve server, in the spirit of Triton's perf_analyzer.

::

    camserve perf --model shapes-classifier --method gradcam --concurrency 1,4,16 --duration 30s --synthetic 64x64
    camserve perf --model shapes-classifier --images photos/ --requests 500 --compare-predict --json perf.json

For each concurrency level N it keeps exactly N requests in flight over the SDK's async client (its channel, token
and deadline handling; retries off unless ``--retries`` is given, so every failure is counted), after a warm-up that
is not measured, until the bound is reached: ``--requests`` (that many measured requests per level) and/or
``--duration`` (no new request after that time; the ones in flight are awaited and counted). The images are read
and encoded once before the run, so the client's own cost per request is one gRPC call and one protobuf parse.
``--compare-predict`` runs the same images at each level as a predictions-only request and prints the ratio.

Statistics and the table live in :mod:`camserve._perfstats`; the command line registers the options
(:func:`add_parser`) and calls :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2
from google.protobuf.message import DecodeError
from PIL import Image

from camserve._aio import AsyncClient
from camserve._base import check_model
from camserve._files import IMAGE_SUFFIXES
from camserve._options import explain_call
from camserve._perfstats import (
    MAX_BATCH_IMAGES,
    MAX_REQUESTS,
    Level,
    OptionError,
    check_count,
    parse_concurrency,
    parse_duration,
    parse_size,
    ratios,
    table,
)
from camserve.errors import CamserveError

#: The predictions-only request: the wire has no "no maps" switch (empty methods = the model's defaults), and
#: ``cam`` is the one method computed without a backward pass (a forward under no_grad plus a product with the
#: linear head's weights on one layer), so it is the cheapest honest way to ask for predictions.
PREDICT_METHOD = "cam"
DEFAULT_DURATION = "10s"
PROGRESS_TTY_S = 0.25  # redraw interval of the live line on a terminal
PROGRESS_PLAIN_S = 10.0  # interval of the plain progress lines otherwise (CI logs)


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Registers ``perf`` (with the shared connection options of ``common``) on the subcommand parsers ``sub``."""
    p = sub.add_parser(
        "perf",
        parents=[common],
        help="load-test a model: throughput, latency percentiles, errors, server timing per concurrency level",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--method", dest="methods", action="append", help="a method (repeat; default: the model's)")
    p.add_argument("--layer", dest="layers", action="append", help="a layer (repeat; default: the model's)")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated requests in flight (default 1,4,16)")
    p.add_argument("--duration", help=f"time per level, e.g. 30s, 500ms, 2m (default {DEFAULT_DURATION})")
    p.add_argument("--requests", type=int, help="measured requests per level (with --duration: whichever first)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--images", type=Path, metavar="DIR", help="send the image files of DIR (not recursive)")
    src.add_argument("--synthetic", metavar="WxH", default="64x64", help="random RGB PNGs of this size (default)")
    p.add_argument("--batch-images", type=int, default=1, metavar="K", help="images per request (default 1)")
    p.add_argument("--deadline", type=float, metavar="S", help="deadline per request, seconds (default --timeout)")
    p.add_argument("--warmup", type=int, help="unmeasured requests before each mode (default 2 x max concurrency)")
    p.add_argument("--compare-predict", action="store_true", help="also run predictions only; print the ratio")
    p.add_argument("--json", type=Path, metavar="FILE", help="write every level's figures as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for reports)")
    p.set_defaults(retries=0)  # a load test counts failures instead of hiding them behind retries


@dataclass(frozen=True)
class Plan:
    """The validated run: what to send and how long."""

    model: str
    methods: tuple[str, ...]
    layers: tuple[str, ...]
    levels: tuple[int, ...]
    duration_s: float | None
    requests: int | None
    warmup: int
    batch_images: int
    deadline_s: float
    images: tuple[bytes, ...]
    source: str


def _plan(args: argparse.Namespace) -> Plan:
    check_model(args.model)
    levels = parse_concurrency(args.concurrency)
    requests = None if args.requests is None else check_count("requests", args.requests, 1, MAX_REQUESTS)
    duration = parse_duration(args.duration) if args.duration is not None else None
    if duration is None and requests is None:
        duration = parse_duration(DEFAULT_DURATION)
    batch = check_count("batch-images", args.batch_images, 1, MAX_BATCH_IMAGES)
    warmup = 2 * max(levels) if args.warmup is None else check_count("warmup", args.warmup, 0, MAX_REQUESTS)
    deadline = args.timeout if args.deadline is None else args.deadline
    if not 0 < deadline <= 3600:
        raise OptionError(f"--deadline must be above 0 and at most 3600 seconds, got {deadline}")
    if args.images is not None:
        images, source = _read_dir(args.images), f"{args.images} ({{n}} files)"
    else:
        width, height = parse_size(args.synthetic)
        images, source = _synthetic(width, height, 8), f"synthetic {width}x{height} PNG ({{n}} random images)"
    return Plan(
        model=args.model,
        methods=tuple(args.methods or ()),
        layers=tuple(args.layers or ()),
        levels=tuple(levels),
        duration_s=duration,
        requests=requests,
        warmup=warmup,
        batch_images=batch,
        deadline_s=float(deadline),
        images=tuple(images),
        source=source.format(n=len(images)),
    )


def _read_dir(folder: Path) -> list[bytes]:
    if not folder.is_dir():
        raise OptionError(f"--images: no such directory: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise OptionError(f"--images: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return [p.read_bytes() for p in files]


def _synthetic(width: int, height: int, count: int) -> list[bytes]:
    """``count`` different random RGB images as PNG bytes (they travel as a user's files do)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _requests(plan: Plan, methods: Sequence[str], layers: Sequence[str]) -> list[inference_pb2.PredictionsRequest]:
    """One prepared request per image (each carrying ``batch_images`` images from there on, cyclically)."""
    options = explain_call({"methods": list(methods) or None, "layers": list(layers) or None}).options
    n = len(plan.images)
    out = []
    for g in range(n):
        items = [plan.images[(g * plan.batch_images + j) % n] for j in range(plan.batch_images)]
        batch = AsyncClient._prepare(items, 0, options, f"perf-{g}")
        if batch.request is None:  # every image failed on the client: the first error says why
            raise next(iter(batch.failed.values()))
        out.append(AsyncClient._predictions_request(plan.model, "", batch.request))
    return out


async def _send(client: AsyncClient, request: inference_pb2.PredictionsRequest, plan: Plan, stats: Level) -> None:
    """One request, recorded in ``stats``: a gRPC status or an in-band error counts by its code name."""
    start = time.perf_counter()
    try:
        response, _ = await client._call(client._stub.Predictions, request, timeout=plan.deadline_s, headers=None)
    except CamserveError as exc:
        stats.add_error(exc.code, (time.perf_counter() - start) * 1000.0)
        return
    latency = (time.perf_counter() - start) * 1000.0
    try:
        answer = explain_pb2.ExplainResponse.FromString(response.prediction)
    except DecodeError:  # not an ExplainResponse: the server's fault, counted like one
        stats.add_error("INTERNAL", latency)
        return
    codes = [answer.error.code] if answer.error.code else [r.error.code for r in answer.results if r.error.code]
    if codes:
        stats.add_error(codes[0], latency)
        return
    t = answer.timing
    timing = (t.decode_ms, t.explain_ms, t.encode_ms, t.batch_size)
    stats.add_ok(latency, len(response.prediction), timing, len(answer.results))


async def _level(
    client: AsyncClient,
    payloads: Sequence[inference_pb2.PredictionsRequest],
    plan: Plan,
    stats: Level,
    *,
    requests: int | None,
    duration_s: float | None,
) -> Level:
    """Keeps ``stats.concurrency`` requests in flight until ``requests`` were sent or ``duration_s`` passed."""
    sent = 0
    start = time.perf_counter()
    end = None if duration_s is None else start + duration_s

    async def worker() -> None:
        nonlocal sent
        while (requests is None or sent < requests) and (end is None or time.perf_counter() < end):
            index = sent
            sent += 1
            await _send(client, payloads[index % len(payloads)], plan, stats)

    await asyncio.gather(*(worker() for _ in range(stats.concurrency)))
    stats.wall_s = time.perf_counter() - start
    return stats


class _Progress:
    """The live line on stderr: redrawn in place on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.task: asyncio.Task[None] | None = None

    def start(self, stats: Level, plan: Plan, label: str) -> None:
        self.task = asyncio.ensure_future(self._loop(stats, plan, label, time.perf_counter()))

    async def _loop(self, stats: Level, plan: Plan, label: str, began: float) -> None:
        interval = PROGRESS_TTY_S if self.tty else PROGRESS_PLAIN_S
        while True:
            await asyncio.sleep(interval)
            elapsed = time.perf_counter() - began
            bound = []
            if plan.requests is not None:
                bound.append(f"{stats.requests}/{plan.requests} requests")
            if plan.duration_s is not None:
                bound.append(f"{elapsed:.0f}/{plan.duration_s:.0f} s")
            line = (
                f"camserve perf: {label} c={stats.concurrency}: {', '.join(bound)}, "
                f"{stats.ok / max(elapsed, 1e-9):.1f} req/s, {sum(stats.errors.values())} errors"
            )
            self.stream.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
            self.stream.flush()

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


async def _predict_layers(client: AsyncClient, plan: Plan) -> tuple[str, ...]:
    info = await client.describe(plan.model, timeout=plan.deadline_s)
    if PREDICT_METHOD not in info.methods:
        raise OptionError(
            f"--compare-predict: {plan.model} ({info.kind}) has no predictions-only request: it offers no "
            f"gradient-free method ({PREDICT_METHOD!r}); its methods are {', '.join(info.methods)}"
        )
    return tuple(info.default_layers[:1])


async def _run(
    args: argparse.Namespace, connection: Mapping[str, Any], plan: Plan, err: TextIO
) -> list[dict[str, object]]:
    async with AsyncClient(**connection) as client:
        modes = [("explain", _requests(plan, plan.methods, plan.layers))]
        if args.compare_predict:
            modes.append(("predict", _requests(plan, [PREDICT_METHOD], await _predict_layers(client, plan))))
        for _, payloads in modes:  # warm-up: workers, batching, connection; not measured
            warm = Level("warmup", max(plan.levels), plan.batch_images)
            await _level(client, payloads, plan, warm, requests=plan.warmup, duration_s=None)
        progress = _Progress(err)
        summaries = []
        for concurrency in plan.levels:
            for mode, payloads in modes:  # interleaved, so drift in the machine's load affects both modes alike
                stats = Level(mode, concurrency, plan.batch_images)
                progress.start(stats, plan, mode)
                try:
                    await _level(client, payloads, plan, stats, requests=plan.requests, duration_s=plan.duration_s)
                finally:
                    await progress.stop()
                summaries.append(stats.summary())
        return summaries


def run(args: argparse.Namespace, connection: Mapping[str, Any], out: TextIO, err: TextIO) -> int:
    """Runs ``camserve perf`` with the parsed options and the client arguments ``connection``.

    Returns 0, or 1 when every measured request failed.

    Raises:
        OptionError: An option value that cannot be used (the command line exits with 2).
        CamserveError: The server refused before measuring (e.g. unknown model for ``--compare-predict``).
    """
    plan = _plan(args)
    if args.json is not None and not args.json.parent.is_dir():
        raise OptionError(f"--json: no such directory: {args.json.parent}")
    summaries = asyncio.run(_run(args, connection, plan, err))
    bounds = " and ".join(
        b
        for b in (
            f"{plan.requests} requests" if plan.requests is not None else "",
            f"{plan.duration_s:g} s" if plan.duration_s is not None else "",
        )
        if b
    )
    methods = ", ".join(plan.methods) or "the model's defaults"
    print(
        f"camserve perf: {plan.model}, methods {methods}; {plan.batch_images} image(s)/request from {plan.source}; "
        f"per level: {bounds}, after {plan.warmup} warm-up requests; deadline {plan.deadline_s:g} s",
        file=out,
    )
    print(table(summaries, markdown=args.markdown), file=out)
    compared = ratios(summaries)
    for level, ratio in compared.items():
        shown = f"{ratio:.2f}x" if ratio is not None else "n/a (no successful predictions)"
        print(f"explain / predict throughput at c={level}: {shown}", file=out)
    if args.json is not None:
        document = {
            "tool": "camserve perf",
            "model": plan.model,
            "methods": list(plan.methods),
            "layers": list(plan.layers),
            "predict_method": PREDICT_METHOD if args.compare_predict else None,
            "images": plan.source,
            "batch_images": plan.batch_images,
            "duration_s": plan.duration_s,
            "requests": plan.requests,
            "warmup": plan.warmup,
            "deadline_s": plan.deadline_s,
            "levels": summaries,
            "explain_over_predict": {str(k): v for k, v in compared.items()},
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if not any(s["ok"] for s in summaries):
        print("camserve perf: every measured request failed", file=err)
        return 1
    return 0


__all__ = ["PREDICT_METHOD", "OptionError", "add_parser", "run"]
