"""The asyncio client: the same calls as :class:`camserve.Client`, as coroutines, over ``grpc.aio``."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, Unpack, overload

import grpc
import grpc.aio

from camserve._base import ClientBase, PreparedBatch, check_model
from camserve._filters import Filters, decode_filters, filters_request
from camserve._images import ImageLike
from camserve._options import ExplainCall, ExplainManyArgs, ExplainOneArgs, explain_call, explain_many_call
from camserve._results import ExplainResult, ModelEntry, ModelInfo
from camserve._visualize import Visualization, VisualizeArgs, decode_visualize, visualize_request
from camserve.errors import CamserveError

T = TypeVar("T")


async def _chunks(images: Iterable[Any] | AsyncIterable[Any], size: int) -> AsyncIterator[tuple[int, list[Any]]]:
    """Yields ``(start index, up to size images)`` from a sync or async iterable, lazily."""
    start = 0
    if isinstance(images, AsyncIterable):
        chunk: list[Any] = []
        async for item in images:
            chunk.append(item)
            if len(chunk) == size:
                yield start, chunk
                start += size
                chunk = []
        if chunk:
            yield start, chunk
        return
    iterator = iter(images)
    while chunk := list(itertools.islice(iterator, size)):
        yield start, chunk
        start += len(chunk)


class AsyncClient(ClientBase):
    """The asyncio twin of :class:`camserve.Client`: same arguments, same methods (awaitable), same errors.

    ::

        async with camserve.AsyncClient(token_file="key_file.json") as client:
            result = await client.explain("cat.jpg", model="imagenet-efficientnet-lite0")
            async for r in client.explain_many(paths, model="shapes-classifier", concurrency=8):
                ...

    See :class:`camserve.Client` for the arguments. Create and use it inside one running event loop.
    """

    _grpc = grpc.aio

    async def close(self) -> None:
        """Closes the channels; later calls raise. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._channel.close()
        if self._management_channel is not None:
            await self._management_channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self,
        method: Callable[..., Awaitable[T]],
        request: object,
        *,
        timeout: float | None,
        headers: Mapping[str, str] | None,
        kind: str = "inference",
    ) -> tuple[T, float]:
        """One logical call: deadline, metadata, retries (same policy as the sync client)."""
        state = self._state(timeout, kind, request)
        while True:
            remaining = state.remaining()  # raises DeadlineExceeded, as it is, when no time is left
            try:
                response = await method(request, timeout=remaining, metadata=self._metadata(kind, headers))
                return response, state.elapsed_ms()
            except (grpc.RpcError, CamserveError) as exc:  # CamserveError: e.g. an unreadable token file
                delay = self._retry_delay(state, exc)
            await asyncio.sleep(delay)

    async def ping(self, *, timeout: float | None = None, headers: Mapping[str, str] | None = None) -> str:
        """See :meth:`camserve.Client.ping`."""
        response, _ = await self._call(self._stub.Ping, self._ping_request(), timeout=timeout, headers=headers)
        return self._ping_status(response)

    async def describe(
        self,
        model: str,
        *,
        version: str = "",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ModelInfo:
        """See :meth:`camserve.Client.describe`."""
        request = self._describe_request(model, version)
        response, _ = await self._call(self._stub.Predictions, request, timeout=timeout, headers=headers)
        return self._decode_describe(response, model)

    async def filters(
        self,
        model: str,
        *,
        layers: str | Sequence[str] | None = None,
        max_channels: int | None = None,
        version: str = "",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Filters:
        """See :meth:`camserve.Client.filters`."""
        check_model(model)
        request = filters_request(model, version, layers, max_channels, uuid.uuid4().hex)
        response, _ = await self._call(self._stub.Predictions, request, timeout=timeout, headers=headers)
        return decode_filters(response)

    async def visualize(
        self,
        model: str,
        *,
        version: str = "",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[VisualizeArgs],
    ) -> Visualization:
        """See :meth:`camserve.Client.visualize`."""
        check_model(model)
        request = visualize_request(model, version, uuid.uuid4().hex, options)
        response, _ = await self._call(self._stub.Predictions, request, timeout=timeout, headers=headers)
        return decode_visualize(response)

    async def models(
        self, *, timeout: float | None = None, headers: Mapping[str, str] | None = None
    ) -> list[ModelEntry]:
        """See :meth:`camserve.Client.models`."""
        stub = self._management_stub()
        pages = self._model_pages(timeout)
        while (step := pages.next()) is not None:
            response, _ = await self._call(
                stub.ListModels, step.request, timeout=step.timeout, headers=headers, kind="management"
            )
            pages.add(response)
        return pages.entries

    @overload
    async def explain(self, images: ImageLike, *, model: str, **options: Unpack[ExplainOneArgs]) -> ExplainResult: ...

    @overload
    async def explain(
        self, images: Sequence[Any], *, model: str, **options: Unpack[ExplainOneArgs]
    ) -> list[ExplainResult]: ...

    async def explain(
        self, images: Any, *, model: str, **options: Unpack[ExplainOneArgs]
    ) -> ExplainResult | list[ExplainResult]:
        """See :meth:`camserve.Client.explain`. Images are read and encoded in a worker thread."""
        check_model(model)
        call = explain_call(options)
        items, single = self._as_list(images)
        batch = await asyncio.to_thread(self._prepare, items, 0, call.options, call.request_id or uuid.uuid4().hex)
        results = await self._run_batch(batch, model, call)
        return self._finish(results, single, call.strict)

    async def _run_batch(self, batch: PreparedBatch, model: str, call: ExplainCall) -> list[ExplainResult]:
        if batch.request is None:
            return self._assemble(batch, None, model, 0.0)
        request = self._predictions_request(model, call.version, batch.request)
        response, elapsed = await self._call(
            self._stub.Predictions, request, timeout=call.timeout, headers=call.headers
        )
        return self._assemble(batch, response, model, elapsed)

    def explain_many(
        self, images: Iterable[Any] | AsyncIterable[Any], *, model: str, **options: Unpack[ExplainManyArgs]
    ) -> AsyncIterator[ExplainResult]:
        """See :meth:`camserve.Client.explain_many`; use with ``async for``. ``images`` may be an async iterable."""
        check_model(model)
        call = explain_many_call(options)
        self._state(call.timeout)
        return self._stream(images, model, call)

    async def _stream(
        self, images: Iterable[Any] | AsyncIterable[Any], model: str, call: ExplainCall
    ) -> AsyncIterator[ExplainResult]:
        async def work(start: int, items: list[Any]) -> list[ExplainResult]:
            batch = await asyncio.to_thread(self._prepare, items, start, call.options, uuid.uuid4().hex)
            return await self._run_batch(batch, model, call)

        source = _chunks(images, call.batch_size)
        pending: deque[asyncio.Task[list[ExplainResult]]] = deque()
        try:
            async for start, items in source:
                pending.append(asyncio.ensure_future(work(start, items)))
                if len(pending) == call.concurrency:
                    break
            while pending:
                results = await pending.popleft()
                following = await anext(source, None)
                if following is not None:
                    pending.append(asyncio.ensure_future(work(*following)))
                for result in results:
                    if call.strict:
                        result.raise_for_error()
                    yield result
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await source.aclose()  # type: ignore[attr-defined]
