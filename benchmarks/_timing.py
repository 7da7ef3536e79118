"""The one timing loop of the benchmarks: contestants interleaved with a plain forward, ratios per round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

__all__ = ["Contestant", "measure"]

Contestant = Callable[[], object]


def measure(
    forward: Contestant, contestants: dict[str, Contestant], rounds: int, warmup: int
) -> tuple[float, dict[str, float]]:
    """Median forward time and each contestant's median per-round ratio to it (interleaved, order reversed)."""
    names = list(contestants)
    for _ in range(warmup):
        forward()
        for n in names:
            contestants[n]()
    fwd_times: list[float] = []
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = ["__forward__", *names]
        if r % 2:
            order.reverse()
        times: dict[str, float] = {}
        for n in order:
            fn = forward if n == "__forward__" else contestants[n]
            t0 = time.perf_counter()
            fn()
            times[n] = time.perf_counter() - t0
        fwd_times.append(times["__forward__"])
        for n in names:
            ratios[n].append(times[n] / times["__forward__"])
    return statistics.median(fwd_times), {n: statistics.median(v) for n, v in ratios.items()}
