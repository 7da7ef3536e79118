"""CPU time spent per process role during a measured level: the client, the gateway, TorchServe's frontend, workers.

Read from ``/proc/<pid>/stat`` (user + system time of every live thread of the process, in clock ticks) before
and after a level; on a 2-core machine shared by everything, CPU milliseconds per request say more about what a
path costs than wall time. Processes are found by session: :mod:`deploy._server` starts TorchServe and the gateway
each in its own session, so the TorchServe session holds the Java frontend (``java``) and the Python workers.
The workers' page faults (minor + major, field 10 and 12) are counted beside their CPU time: a worker whose
allocator returns freed memory to the kernel and faults it back in on the next batch shows it there (see
deploy/_tuning.py). Linux only; elsewhere every figure is empty.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["FAULTS", "ROLES", "CpuSampler", "role_of"]

ROLES = ("client", "gateway", "frontend", "workers")
FAULTS = "worker_faults"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[str, int, float, int] | None:
    """(comm, session id, user + system CPU seconds, page faults) of one process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): session is field 6, minflt 10, majflt 12, utime 14, stime 15.
    return comm, int(fields[3]), (int(fields[11]) + int(fields[12])) / _TICK, int(fields[7]) + int(fields[9])


def role_of(comm: str, session: int, sessions: Mapping[str, int]) -> str | None:
    """The role of a process from its command name and session (None: not part of the measurement)."""
    if session == sessions.get("gateway"):
        return "gateway"
    if session == sessions.get("torchserve"):
        return "frontend" if comm == "java" else "workers"
    return None


class CpuSampler:
    """CPU seconds by role, for the processes of one server and this (client) process."""

    def __init__(self, torchserve_pid: int, gateway_pid: int | None) -> None:
        self.sessions = {"torchserve": torchserve_pid}
        if gateway_pid is not None:
            self.sessions["gateway"] = gateway_pid

    def sample(self) -> dict[str, float]:
        """CPU seconds used so far by each role, and the workers' page faults under :data:`FAULTS` (processes that
        ended are no longer counted)."""
        out = dict.fromkeys((*ROLES, FAULTS), 0.0)
        times = os.times()
        out["client"] = times.user + times.system
        if not Path("/proc").is_dir():
            return out
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            stat = _stat(int(entry.name))
            if stat is None:
                continue
            role = role_of(stat[0], stat[1], self.sessions)
            if role is not None:
                out[role] += stat[2]
            if role == "workers":
                out[FAULTS] += stat[3]
        return out

    @staticmethod
    def per_request_ms(before: Mapping[str, float], after: Mapping[str, float], requests: int) -> dict[str, float]:
        """CPU milliseconds per request of each role between two samples."""
        if requests <= 0:
            return {}
        return {role: (after[role] - before[role]) * 1000.0 / requests for role in ROLES}
