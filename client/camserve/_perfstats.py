"""The figures of ``camserve perf``: its option values parsed, one level's measurements, their statistics and table.

Everything here is pure Python (no gRPC, no event loop), so it is unit-tested on its own: :func:`percentile` is
numpy's default ("linear") interpolation, :class:`Level` collects what one concurrency level measured and turns it
into the figures the table and the JSON file show (:meth:`Level.summary`), and :func:`table` lays them out.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

#: Upper bounds that catch typing mistakes (``--concurrency 10000``) rather than limit real use.
MAX_CONCURRENCY = 1024
MAX_REQUESTS = 10_000_000
MAX_DURATION_S = 24 * 3600.0
MAX_SIDE = 8192
MAX_BATCH_IMAGES = 1024

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class OptionError(ValueError):
    """A ``camserve perf`` option value that cannot be used; the message names the option (exit code 2)."""


def parse_concurrency(text: str) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]``: positive integers up to :data:`MAX_CONCURRENCY`, no repeats."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise OptionError(f"--concurrency must be a comma-separated list of positive integers, got {text!r}")
    levels = [int(p) for p in parts]
    bad = [n for n in levels if not 1 <= n <= MAX_CONCURRENCY]
    if bad:
        raise OptionError(f"--concurrency values must be between 1 and {MAX_CONCURRENCY}, got {bad[0]}")
    if len(set(levels)) != len(levels):
        raise OptionError(f"--concurrency lists a level twice: {text!r}")
    return levels


def parse_duration(text: str) -> float:
    """``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or plain seconds (``"12.5"``) -> seconds, in (0, 24 h]."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise OptionError(f"--duration must be a number of seconds or end in ms/s/m/h (e.g. 30s), got {text!r}")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 0 < seconds <= MAX_DURATION_S:
        raise OptionError(f"--duration must be above 0 and at most 24h, got {text!r}")
    return seconds


def parse_size(text: str) -> tuple[int, int]:
    """``"224x224"`` -> ``(width, height)``: both sides between 1 and :data:`MAX_SIDE` pixels."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise OptionError(f"--synthetic must be WIDTHxHEIGHT in pixels (e.g. 224x224), got {text!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise OptionError(f"--synthetic sides must be between 1 and {MAX_SIDE} pixels, got {text!r}")
    return width, height


def check_count(name: str, value: int, low: int, high: int) -> int:
    """``value`` when ``low <= value <= high``, else an :class:`OptionError` naming ``--name``."""
    if not low <= value <= high:
        raise OptionError(f"--{name} must be between {low} and {high}, got {value}")
    return value


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics (numpy's default).

    Raises:
        ValueError: No values, or ``q`` outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclasses.dataclass
class Level:
    """What one run at one concurrency measured (warm-up excluded).

    Attributes:
        mode: ``"explain"`` (the requested methods) or ``"predict"`` (the predictions-only comparison).
        concurrency: Requests in flight.
        wall_s: From the first request sent to the last answer received, seconds.
        images_per_request: Images each request carries.
        latencies_ms: Round trip of every answered request (successful or not), milliseconds.
        errors: Failed requests by gRPC status code name (a request with any failed image counts once).
        images_ok: Images explained without error.
        response_bytes: Size of each successful response (the serialized ``ExplainResponse``).
        decode_ms, explain_ms, encode_ms, batch_size: The server-side timing each successful response carried.
    """

    mode: str
    concurrency: int
    images_per_request: int
    wall_s: float = 0.0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    images_ok: int = 0
    response_bytes: list[int] = dataclasses.field(default_factory=list)
    decode_ms: list[float] = dataclasses.field(default_factory=list)
    explain_ms: list[float] = dataclasses.field(default_factory=list)
    encode_ms: list[float] = dataclasses.field(default_factory=list)
    batch_size: list[int] = dataclasses.field(default_factory=list)

    @property
    def requests(self) -> int:
        """Requests measured: successful and failed."""
        return len(self.response_bytes) + sum(self.errors.values())

    @property
    def ok(self) -> int:
        """Requests answered without any error."""
        return len(self.response_bytes)

    def add_ok(self, latency_ms: float, size: int, timing: tuple[float, float, float, int], images: int) -> None:
        """Records a successful request: its latency, response size, server timing and images explained."""
        self.latencies_ms.append(latency_ms)
        self.response_bytes.append(size)
        decode, explain, encode, batch = timing
        self.decode_ms.append(decode)
        self.explain_ms.append(explain)
        self.encode_ms.append(encode)
        self.batch_size.append(batch)
        self.images_ok += images

    def add_error(self, code: str, latency_ms: float | None) -> None:
        """Records a failed request by its status code name (``latency_ms`` None: it never got an answer)."""
        self.errors[code] += 1
        if latency_ms is not None:
            self.latencies_ms.append(latency_ms)

    def summary(self) -> dict[str, object]:
        """The level's figures as plain data (the JSON file's ``levels[]`` entries; README documents the keys)."""
        wall = self.wall_s if self.wall_s > 0 else None
        lat = self.latencies_ms
        latency = (
            {
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
                "max": max(lat),
                "mean": _mean(lat),
            }
            if lat
            else None
        )
        server = {
            "decode_ms_mean": _mean(self.decode_ms),
            "explain_ms_mean": _mean(self.explain_ms),
            "encode_ms_mean": _mean(self.encode_ms),
            "batch_size_mean": _mean([float(b) for b in self.batch_size]),
            "batch_size_p50": percentile([float(b) for b in self.batch_size], 50) if self.batch_size else None,
        }
        return {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "images_per_request": self.images_per_request,
            "requests": self.requests,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "wall_s": self.wall_s,
            "requests_per_s": self.ok / wall if wall else 0.0,
            "images_per_s": self.images_ok / wall if wall else 0.0,
            "latency_ms": latency,
            "response_bytes_mean": _mean([float(b) for b in self.response_bytes]),
            "server": server,
        }


def _num(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    assert isinstance(value, int | float)
    return f"{value:,.{digits}f}"


HEADER = (
    "mode",
    "conc",
    "reqs",
    "errors",
    "req/s",
    "img/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "resp B",
    "srv decode",
    "srv explain",
    "srv encode",
    "batch mean/p50",
)


def _row(s: Mapping[str, object]) -> list[str]:
    lat = s["latency_ms"]
    server = s["server"]
    assert isinstance(server, dict)
    figures = [_num(lat[k]) if isinstance(lat, dict) else "-" for k in ("p50", "p90", "p99", "max")]
    errors = s["errors"]
    assert isinstance(errors, dict)
    batch = f"{_num(server['batch_size_mean'])}/{_num(server['batch_size_p50'], 0)}"
    return [
        str(s["mode"]),
        str(s["concurrency"]),
        str(s["requests"]),
        str(sum(errors.values())),
        _num(s["requests_per_s"]),
        _num(s["images_per_s"]),
        *figures,
        _num(s["response_bytes_mean"], 0),
        _num(server["decode_ms_mean"], 2),
        _num(server["explain_ms_mean"], 2),
        _num(server["encode_ms_mean"], 2),
        batch,
    ]


def table(summaries: Sequence[Mapping[str, object]], markdown: bool = False) -> str:
    """The levels as an aligned text table (or a Markdown table), one row per level, then the errors by code."""
    rows = [list(HEADER)] + [_row(s) for s in summaries]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        lines.insert(1, "|" + "|".join("---" if i < 1 else "---:" for i in range(len(HEADER))) + "|")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]
    for s in summaries:
        errors = s["errors"]
        assert isinstance(errors, dict)
        if errors:
            listed = ", ".join(f"{code} {n}" for code, n in errors.items())
            lines.append(f"errors at {s['mode']} c={s['concurrency']}: {listed}")
    return "\n".join(lines)


def ratios(summaries: Sequence[Mapping[str, object]]) -> dict[int, float | None]:
    """Explain throughput / predict throughput per concurrency level present in both modes (None: predict had 0)."""
    predict = {s["concurrency"]: s["requests_per_s"] for s in summaries if s["mode"] == "predict"}
    out: dict[int, float | None] = {}
    for s in summaries:
        level = s["concurrency"]
        if s["mode"] == "explain" and level in predict:
            assert isinstance(level, int)
            base, rate = predict[level], s["requests_per_s"]
            assert isinstance(base, float) and isinstance(rate, float)
            out[level] = rate / base if base > 0 else None
    return out
