"""Process tuning of TorchServe's workers: the environment defaults the server starts with, each one measured.

TorchServe's frontend starts every worker with its own environment, so these reach the workers (and the frontend
and gateway, where they change nothing that matters). A variable already set in the environment wins: these are
defaults, not policy. The figures are benchmarks/service_bench.py's on a 2-core VM (benchmarks/RESULTS.md, "Served
side by side"):

- ``OMP_NUM_THREADS=1``: one intra-op thread per worker; TorchServe scales with workers (processes), so cores are
  used by setting ``minWorkers`` per model, not threads per worker. With torch's default (one thread per core) in
  every worker, the workers' OpenMP pools fought over the cores (with the frontend, the gateway and each other).
  Back to back on the demo classifier: plain TorchServe prediction at concurrency 8 ran at 78 req/s with torch's
  default and 452 req/s with one thread, camserve's prediction + gradcam at 76 and 443; at concurrency 1 a gradcam
  took 174 ms (p50) instead of 10.6 ms, the slow served explanations the service benchmark was written to find.
  Two workers of one thread measured no faster than one (429 req/s). With many cores per worker, raise it there.
- ``GLIBC_TUNABLES`` with a fixed 32 MiB mmap threshold (glibc's maximum for the tunable) and a 1 GiB trim
  threshold: glibc otherwise serves large tensors with mmap and returns freed heap to the kernel, and every batch
  faults the same memory back in. A ResNet-50 batch-8 worker took 3,200-8,000 page faults per request with the
  defaults and 0-140 with these, and its CPU per request fell from 81 to 74 ms (means of 4 levels each). The
  cost: a worker keeps its peak heap (up to the trim threshold) instead of returning it between batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["WORKER_ENV", "server_env"]

WORKER_ENV: Final[Mapping[str, str]] = {
    "OMP_NUM_THREADS": "1",
    "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824",
}
"""The tuned defaults (see the module docstring for the measurements behind each)."""


def server_env(environ: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``environ`` with :data:`WORKER_ENV`'s defaults for what it leaves unset, then
    ``extra`` on top. A tuned variable set to an empty string (in ``environ`` or ``extra``) is left out, which
    restores the library's own default (``OMP_NUM_THREADS=`` : torch's one thread per core)."""
    env = {**WORKER_ENV, **environ, **(extra or {})}
    return {k: v for k, v in env.items() if v or k not in WORKER_ENV}
