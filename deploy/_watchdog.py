"""The gateway's watchdog: whether every model can serve, and restoring its workers when TorchServe lost them.

TorchServe's own Ping says "Healthy" while a model has no worker at all (seen after its frontend's worker thread
died) — an orchestrator probing it never learns. The watchdog asks the management API every few seconds how many
of each model's workers are READY, compares with the worker count the model was started with, and remembers how
long a model with calls in progress has gone without answering any. ``problems()`` is what the gateway's Ping
reports; a model whose workers are *gone* (fewer workers than configured, e.g. after ``ScaleWorker`` to 0 or a
worker thread that ended without restarting) is scaled back to its configured count through the management API.
Workers that exist but are not READY yet are TorchServe's own restart with backoff: reported, not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
import grpc.aio
from camserve_proto.org.pytorch.serve.grpc.management import management_pb2

_log = logging.getLogger("camserve.gateway.watchdog")

_MANAGEMENT: Final = "/org.pytorch.serve.grpc.management.ManagementAPIsService/"


@dataclass(frozen=True)
class Workers:
    """A model's workers as the management API describes them."""

    listed: int
    ready: int
    min_workers: int
    max_workers: int


def parse_description(text: str) -> Workers:
    """Reads ``DescribeModel``'s JSON answer (a one-element list) into :class:`Workers`."""
    (info,) = json.loads(text)[:1]
    workers = info.get("workers", [])
    return Workers(
        listed=len(workers),
        ready=sum(1 for w in workers if w.get("status") == "READY"),
        min_workers=int(info.get("minWorkers", 1)),
        max_workers=int(info.get("maxWorkers", info.get("minWorkers", 1))),
    )


class Watchdog:
    """Periodic worker checks and in-flight progress for every served model (one asyncio task)."""

    def __init__(
        self,
        management: grpc.aio.Channel,
        *,
        key_file: Path | None,
        interval: float,
        stall_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = management
        self._key_file = key_file
        self.interval = interval
        self.stall_after = stall_after
        self._clock = clock
        self.wanted: dict[str, Workers] = {}
        self._seen: dict[str, Workers] = {}
        self._inflight: dict[str, int] = {}
        self._progress: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.restores = 0

    # ------------------------------------------------------------------------------------------ progress
    def sent(self, model: str) -> None:
        """A call went upstream for ``model``."""
        if not self._inflight.get(model):
            self._progress[model] = self._clock()  # idle until now: the stall clock starts with this call
        self._inflight[model] = self._inflight.get(model, 0) + 1

    def answered(self, model: str) -> None:
        """TorchServe answered one of ``model``'s calls (success or error: either is progress)."""
        self._inflight[model] = max(self._inflight.get(model, 0) - 1, 0)
        self._progress[model] = self._clock()

    def problems(self) -> dict[str, str]:
        """Per model that cannot serve right now, why (empty when all can)."""
        out: dict[str, str] = {}
        now = self._clock()
        for model, wanted in self.wanted.items():
            seen = self._seen.get(model)
            if seen is not None and seen.ready < wanted.min_workers:
                out[model] = f"{seen.ready} of {wanted.min_workers} workers ready"
            elif self._inflight.get(model) and now - self._progress.get(model, now) > self.stall_after:
                out[model] = (
                    f"no answer for {now - self._progress[model]:.0f} s with {self._inflight[model]} calls in progress"
                )
        return out

    # ------------------------------------------------------------------------------------------ checks
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self._key_file is None:
            return ()
        key = json.loads(self._key_file.read_text(encoding="utf-8"))["management"]["key"]
        return (("authorization", f"Bearer {key}"),)

    async def _call(self, method: str, request: bytes) -> str:
        answer = await self._channel.unary_unary(_MANAGEMENT + method)(request, metadata=self._metadata(), timeout=30)
        return str(management_pb2.ManagementResponse.FromString(answer).msg)

    async def describe(self, model: str) -> Workers:
        request = management_pb2.DescribeModelRequest(model_name=model).SerializeToString()
        return parse_description(await self._call("DescribeModel", request))

    async def models(self) -> list[str]:
        listed = json.loads(
            await self._call("ListModels", management_pb2.ListModelsRequest(limit=1000).SerializeToString())
        )
        return [str(m["modelName"]) for m in listed.get("models", [])]

    async def check_once(self) -> None:
        """Describes every model once; scales a model whose workers are gone back to its configured count."""
        for model, wanted in self.wanted.items():
            try:
                seen = await self.describe(model)
            except (grpc.aio.AioRpcError, OSError, ValueError, KeyError) as exc:
                _log.warning("cannot describe %s: %s", model, exc)
                continue
            self._seen[model] = seen
            if seen.listed < wanted.min_workers:
                _log.warning("%s has %d workers, configured %d: restoring", model, seen.listed, wanted.min_workers)
                scale = management_pb2.ScaleWorkerRequest(
                    model_name=model, min_worker=wanted.min_workers, max_worker=wanted.max_workers
                )
                try:
                    await self._call("ScaleWorker", scale.SerializeToString())
                    self.restores += 1
                except grpc.aio.AioRpcError as exc:
                    _log.error("restoring the workers of %s failed: %s", model, exc.details())

    async def start(self) -> None:
        """Records every model's configured workers (TorchServe is ready by now) and starts checking."""
        for model in await self.models():
            self.wanted[model] = self._seen[model] = await self.describe(model)
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_once()
            except Exception:  # the watchdog must outlive any surprise; the next round tries again
                _log.exception("watchdog check failed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
