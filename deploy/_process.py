"""Process plumbing for the server controller: process-group signalling, liveness and log tails."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text[-lines:])


def _answers_signal_zero(kill: Callable[[int, int], None], ident: int) -> bool:
    """Whether ``kill(ident, 0)`` finds the process or group (refused for permission means it exists)."""
    try:
        kill(ident, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    return _answers_signal_zero(os.killpg, pgid)


def pid_alive(pid: int) -> bool:
    if not _answers_signal_zero(os.kill, pid):
        return False
    # A reaped-by-nobody zombie still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_group(pid: int, *, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> bool:
    """Stops the launcher ``pid`` and its process group: TERM, wait up to ``timeout`` s, then KILL.

    Returns True when the group stopped on TERM, False when it had to be killed.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            process.poll()
        if not pid_alive(pid) and not _group_alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if process is not None:
        process.wait(timeout=10)
    return False
