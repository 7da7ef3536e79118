"""TorchServe's own timing of a measured level, read from the metrics logs the server appends while it runs.

TorchServe writes, per batch, ``PredictionTime`` (the Python worker's whole ``handle`` call, in
``model_metrics.log``) and, per job, ``QueueTime`` (time in the model's queue until a worker took its batch: the
batching delay and the wait for a busy worker) and ``WorkerThreadTime`` (the frontend's own time around the
backend call) in ``ts_metrics.log``. :class:`MetricsTail` remembers where the logs ended before a level and
returns what was appended during it, so every contestant, the stock handler's included, gets the same
server-side breakdown. Contestants run one at a time, so every line of the window is theirs.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["METRICS", "MetricsTail", "parse_metrics"]

#: Metric name -> the log file that holds it.
METRICS = {
    "PredictionTime": "model_metrics.log",
    "QueueTime": "ts_metrics.log",
    "WorkerThreadTime": "ts_metrics.log",
}
_LINE = re.compile(r" - (PredictionTime|QueueTime|WorkerThreadTime)\.(?:ms|Milliseconds):([0-9.]+)\|")


def parse_metrics(text: str) -> dict[str, list[float]]:
    """Every value of the :data:`METRICS` in ``text`` (log lines), by metric name."""
    out: dict[str, list[float]] = {name: [] for name in METRICS}
    for match in _LINE.finditer(text):
        out[match.group(1)].append(float(match.group(2)))
    return out


class MetricsTail:
    """The metrics TorchServe logged between :meth:`mark` and :meth:`read`."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._offsets: dict[str, int] = {}

    def mark(self) -> None:
        """Remembers where every metrics log ends now."""
        for name in set(METRICS.values()):
            path = self.log_dir / name
            self._offsets[name] = path.stat().st_size if path.exists() else 0

    def read(self) -> dict[str, list[float]]:
        """Every value of each metric logged since :meth:`mark`, by metric name."""
        values: dict[str, list[float]] = {name: [] for name in METRICS}
        for name in set(METRICS.values()):
            path = self.log_dir / name
            if not path.exists():
                continue
            with path.open("rb") as log:
                log.seek(self._offsets.get(name, 0))
                for metric, found in parse_metrics(log.read().decode("utf-8", errors="replace")).items():
                    values[metric] += found
        return values
