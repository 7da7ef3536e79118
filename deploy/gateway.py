"""camserve's gRPC front door: TorchServe's inference and management services, proxied so no client can wedge a model.

Why it exists (measured against TorchServe 0.12 here; deploy/README.md has the numbers). TorchServe's Java frontend
answers a gRPC call from the model's ``WorkerThread``: ``GRPCJob.response`` checks ``isCancelled()`` and then calls
``onNext``/``onCompleted``. A client deadline that expires between the check and the call (every SDK call has a
deadline) makes ``onNext`` throw ``IllegalStateException: call is closed``; the WorkerThread treats that as a dead
backend, kills the Python worker and restarts it, failing the whole batch; when the second throw lands in its
``finally`` (answering the batch's other jobs) the thread dies without scheduling a restart and the model never
serves again. Jobs whose caller has gone stay queued and are still computed, so a burst of short deadlines fills
the 100-job queue and good calls get INTERNAL "has no worker". ``StreamPredictions`` on a handler that does not
stream throws a NullPointerException in the same place (worker restarted), and ``StreamPredictions2`` answers
UNKNOWN. TorchServe is archived upstream, so camserve fixes this around the frontend, here:

- **Upstream calls are never cancelled.** The client's call and TorchServe's call are decoupled: when a client
  goes away, the gateway lets TorchServe's answer arrive and drops it. The frontend only ever answers live calls.
- **Expired work is not done.** Each ``Predictions`` carries the client's absolute deadline to the handler
  (input key :data:`DEADLINE_KEY`, merged into the request bytes as one extra map entry); the handler answers an
  item whose deadline has passed with DEADLINE_EXCEEDED before decoding it. A call whose deadline has passed when
  it arrives is refused at the door.
- **The queue cannot overflow.** At most ``max_inflight`` calls per model are upstream at once (TorchServe's
  ``job_queue_size``, so TorchServe never answers its misleading INTERNAL "has no worker"); more calls wait at the
  gateway for a slot, where a caller who leaves costs nothing, until their deadline.
- **Every RPC works.** ``StreamPredictions`` is one upstream ``Predictions`` streamed back as one message;
  ``StreamPredictions2`` answers each message of the stream in order, errors in band (``status``, as TorchServe
  does for that RPC), with the ``sequence_id`` echoed. Management calls pass through, also never cancelled.
- **Sizes are named.** A request over ``max_request_size`` is refused with a message that names the limit.
- **Health is the truth.** :mod:`deploy._watchdog` checks every model's workers; ``Ping`` answers "Unhealthy"
  (naming the model) while a model has fewer READY workers than configured or stops answering, and the watchdog
  restores the configured worker count through the management API.

Run by :mod:`deploy.serverctl` next to TorchServe (``python -m deploy.gateway CONFIG.json``); TorchServe's own
gRPC ports are then loopback-only internals and clients call the gateway on the configured ports.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import grpc.aio
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2

from deploy._gateway_wire import Refused as _Refused
from deploy._gateway_wire import check_envelope as _check_envelope
from deploy._gateway_wire import deadline_entry, upstream_status
from deploy._watchdog import Watchdog

_log = logging.getLogger("camserve.gateway")

INFERENCE_SERVICE: Final = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
MANAGEMENT_SERVICE: Final = "org.pytorch.serve.grpc.management.ManagementAPIsService"
MANAGEMENT_METHODS: Final = ("DescribeModel", "ListModels", "RegisterModel", "ScaleWorker", "SetDefault",
                             "UnregisterModel")  # fmt: skip
#: Input key carrying the caller's deadline (Unix time in ms, ASCII) to the handler.
DEADLINE_KEY: Final = "camserve-deadline-ms"
#: Metadata never forwarded: transport-level keys that grpc sets itself.
_HOP_BY_HOP: Final = ("user-agent", "grpc-", ":", "content-type", "te")


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway listens, where TorchServe is, and its limits (written by serverctl as JSON).

    Attributes:
        inference: ``host:port`` clients call for TorchServe's inference service.
        management: ``host:port`` for the management service (the SDK's describe/models).
        upstream_inference: TorchServe's own gRPC inference listener (loopback).
        upstream_management: TorchServe's own gRPC management listener (loopback).
        key_file: TorchServe's key_file.json (the watchdog's management key), or None without token auth.
        max_request_bytes: TorchServe's ``max_request_size``: larger requests are refused, with the limit named.
        max_response_bytes: TorchServe's ``max_response_size`` (the upstream channel's receive limit).
        max_inflight: Calls per model upstream at once (TorchServe's ``job_queue_size``); more wait at the gateway.
        queue_wait: Seconds a call without a deadline waits for a slot before UNAVAILABLE (with a deadline: the
            deadline).
        upstream_timeout: Seconds an upstream call may take before the gateway gives up on it (far above any
            model's ``responseTimeout``: reaching it means TorchServe lost the job).
        watch_interval: Seconds between watchdog checks.
        stall_after: Seconds without any answer from a model with calls upstream before it counts as stalled.
        certificate_file: PEM certificate to serve TLS with (None = plaintext).
        private_key_file: PEM private key for ``certificate_file``.
    """

    inference: str
    management: str
    upstream_inference: str
    upstream_management: str
    key_file: str | None = None
    max_request_bytes: int = 6_553_500
    max_response_bytes: int = 6_553_500
    max_inflight: int = 100
    queue_wait: float = 60.0
    upstream_timeout: float = 900.0
    watch_interval: float = 2.0
    stall_after: float = 300.0
    certificate_file: str | None = None
    private_key_file: str | None = None

    @classmethod
    def load(cls, path: Path) -> GatewayConfig:
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__, indent=2) + "\n", encoding="utf-8")


def _forwarded_metadata(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[tuple[str, str | bytes], ...]:
    """The caller's metadata (authorization and custom keys) without the transport's own keys."""
    return tuple(
        (key, value) for key, value in context.invocation_metadata() or () if not key.lower().startswith(_HOP_BY_HOP)
    )


class Gateway:
    """The proxy: one grpc.aio server for both services, two upstream channels, one watchdog."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        upstream_options = [
            ("grpc.max_send_message_length", config.max_request_bytes + (1 << 20)),
            ("grpc.max_receive_message_length", config.max_response_bytes + (1 << 20)),
            ("grpc.enable_retries", 0),
        ]
        self._inference = grpc.aio.insecure_channel(config.upstream_inference, options=upstream_options)
        self._management = grpc.aio.insecure_channel(config.upstream_management, options=upstream_options)
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[bytes]] = set()
        self.watchdog = Watchdog(
            self._management, key_file=Path(config.key_file) if config.key_file else None,
            interval=config.watch_interval, stall_after=config.stall_after,
        )  # fmt: skip
        self._server: grpc.aio.Server | None = None
        #: One multicallable per (channel, method), built on first use (building one is ~0.4 us: tidiness, not speed).
        self._calls: dict[tuple[int, str], grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}

    # ------------------------------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Binds both listeners (TLS when configured) and starts the watchdog."""
        # Receive up to 4x the limit so an oversized request reaches us and is refused with the limit named.
        options = [
            ("grpc.max_receive_message_length", 4 * self.config.max_request_bytes),
            ("grpc.max_send_message_length", -1),
        ]
        server = grpc.aio.server(options=options)
        server.add_generic_rpc_handlers([_Handlers(self)])
        credentials = None
        if self.config.certificate_file and self.config.private_key_file:
            credentials = grpc.ssl_server_credentials(
                [(Path(self.config.private_key_file).read_bytes(), Path(self.config.certificate_file).read_bytes())]
            )
        for address in (self.config.inference, self.config.management):
            if credentials is not None:
                server.add_secure_port(address, credentials)
            else:
                server.add_insecure_port(address)
        await server.start()
        self._server = server
        await self.watchdog.start()
        _log.info("gateway listening on %s / %s", self.config.inference, self.config.management)

    async def stop(self, grace: float = 5.0) -> None:
        await self.watchdog.stop()
        if self._server is not None:
            await self._server.stop(grace)
        await self._inference.close()
        await self._management.close()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    # ------------------------------------------------------------------------------------------ calls
    def _callable(self, channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        key = (id(channel), method)
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = channel.unary_unary(method)
        return call

    async def _upstream(
        self,
        channel: grpc.aio.Channel,
        method: str,
        request: bytes,
        metadata: Any,
        on_done: Callable[[], None] | None = None,
    ) -> bytes:
        """One upstream unary call that a caller who goes away never cancels (``on_done`` runs when it ends).

        The call runs as its own task, awaited through :func:`asyncio.shield`: cancelling the caller's handler
        leaves it running, and its answer is dropped. Upstream errors become :class:`_Refused` with their code.
        """

        async def call() -> bytes:
            try:
                answer = await self._callable(channel, method)(
                    request, metadata=metadata, timeout=self.config.upstream_timeout
                )
                return bytes(answer)
            finally:
                if on_done is not None:
                    on_done()

        task = asyncio.ensure_future(call())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except grpc.aio.AioRpcError as exc:
            raise _Refused(*upstream_status(exc.code(), exc.details() or exc.code().name)) from exc

    async def predict(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """``Predictions``: admission, deadline hand-over, one upstream call that the caller cannot cancel."""
        if len(request) > self.config.max_request_bytes:
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request of {len(request):,} bytes is over this server's max_request_size of "
                f"{self.config.max_request_bytes:,} bytes: send fewer or smaller images per call",
            )
        model = _check_envelope(request)
        slots = self._slots.setdefault(model, asyncio.Semaphore(self.config.max_inflight))
        wait = context.time_remaining()
        try:
            # Calls beyond the queue size wait here, where a caller who leaves costs nothing upstream.
            await asyncio.wait_for(slots.acquire(), timeout=self.config.queue_wait if wait is None else wait)
        except TimeoutError:
            if wait is not None:
                raise _Refused(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"the deadline passed while model {model!r} had {self.config.max_inflight} requests in progress "
                    "(the server's job queue size)",
                ) from None
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE,
                f"model {model!r} had {self.config.max_inflight} requests in progress (the server's job queue size) "
                f"for {self.config.queue_wait:g} s: retry with backoff",
            ) from None
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            slots.release()
            raise _Refused(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the request was served")
        if remaining is not None:
            deadline_ms = int((time.time() + remaining) * 1000)
            # Concatenated protobuf messages merge: this adds one entry to the request's input map.
            request += deadline_entry(DEADLINE_KEY, deadline_ms)
        self.watchdog.sent(model)

        def done() -> None:  # when TorchServe answers, not when the caller leaves: the job is upstream until then
            slots.release()
            self.watchdog.answered(model)

        return await self._upstream(
            self._inference, f"/{INFERENCE_SERVICE}/Predictions", request, _forwarded_metadata(context), done
        )

    async def ping(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        """TorchServe's health, overruled by the watchdog when a model cannot serve."""
        answer = await self._upstream(
            self._inference, f"/{INFERENCE_SERVICE}/Ping", request, _forwarded_metadata(context)
        )
        health = inference_pb2.TorchServeHealthResponse.FromString(answer)
        try:
            status = json.loads(health.health)
        except ValueError:
            status = {"status": health.health}
        problems = self.watchdog.problems()
        if problems:  # look again before saying so: the last round may predate a restart that has finished
            await self.watchdog.check_once()
            problems = self.watchdog.problems()
        if problems:
            status = {"status": "Unhealthy", "models": problems}
        return inference_pb2.TorchServeHealthResponse(health=json.dumps(status)).SerializeToString()

    async def stream_predictions(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """``StreamPredictions``: camserve's handlers answer in one piece, so the stream carries one message."""
        yield await self.predict(request, context)

    async def stream_predictions2(
        self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """``StreamPredictions2``: each message answered in order; errors in band with the sequence id echoed."""
        async for raw in requests:
            try:
                message = inference_pb2.PredictionsRequest.FromString(raw)
            except Exception as exc:
                yield _in_band(grpc.StatusCode.INVALID_ARGUMENT, f"not a PredictionsRequest: {exc}", "")
                continue
            sequence_id = message.sequence_id
            message.ClearField("sequence_id")  # camserve's models are stateless: a plain prediction
            try:
                answer = inference_pb2.PredictionResponse.FromString(
                    await self.predict(message.SerializeToString(), context)
                )
            except _Refused as refused:
                yield _in_band(refused.code, refused.details, sequence_id)
                continue
            answer.sequence_id = sequence_id
            yield answer.SerializeToString()

    async def management(self, method: str, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return await self._upstream(
            self._management, f"/{MANAGEMENT_SERVICE}/{method}", request, _forwarded_metadata(context)
        )


def _in_band(code: grpc.StatusCode, details: str, sequence_id: str) -> bytes:
    status = inference_pb2.Status(code=code.value[0], message=details)
    return inference_pb2.PredictionResponse(sequence_id=sequence_id, status=status).SerializeToString()


async def _abort(context: grpc.aio.ServicerContext[Any, Any], refused: _Refused) -> None:
    """Ends the call with the refusal's status; a caller that has gone meanwhile is simply not answered."""
    if not context.done():
        try:
            await context.abort(refused.code, refused.details)
        except grpc.aio.AbortError:
            raise
        except Exception:  # grpc could not send the status: the caller left as we answered
            _log.debug("the caller left before it was told: %s", refused.details)
    raise asyncio.CancelledError


def _answering(
    behaviour: Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]],
) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]:
    """A unary behaviour whose :class:`_Refused` becomes the call's status."""

    async def run(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            return await behaviour(request, context)
        except _Refused as refused:
            await _abort(context, refused)
            raise  # unreachable: _abort raises

    return run


def _passing(gateway: Gateway, method: str) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]:
    """The pass-through behaviour of one management method."""

    async def run(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return await gateway.management(method, request, context)

    return run


class _Handlers(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Routes the two services' methods (raw bytes in and out) to the gateway; anything else is UNIMPLEMENTED."""

    def __init__(self, gateway: Gateway) -> None:
        g = gateway
        inference = f"/{INFERENCE_SERVICE}/"
        management = f"/{MANAGEMENT_SERVICE}/"

        async def stream(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
            try:
                async for answer in g.stream_predictions(request, context):
                    yield answer
            except _Refused as refused:
                await _abort(context, refused)

        self._methods: dict[str, grpc.RpcMethodHandler] = {
            inference + "Ping": grpc.unary_unary_rpc_method_handler(_answering(g.ping)),
            inference + "Predictions": grpc.unary_unary_rpc_method_handler(_answering(g.predict)),
            inference + "StreamPredictions": grpc.unary_stream_rpc_method_handler(stream),
            inference + "StreamPredictions2": grpc.stream_stream_rpc_method_handler(g.stream_predictions2),
        }
        for name in MANAGEMENT_METHODS:
            self._methods[management + name] = grpc.unary_unary_rpc_method_handler(_answering(_passing(g, name)))

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._methods.get(handler_call_details.method)


async def serve(config: GatewayConfig, *, ready_file: Path | None = None) -> None:
    """Runs the gateway until SIGTERM/SIGINT; writes ``ready_file`` once both listeners are bound."""
    gateway = Gateway(config)
    await gateway.start()
    if ready_file is not None:
        ready_file.write_text("ready\n", encoding="utf-8")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    waiter = asyncio.ensure_future(gateway.wait())
    await asyncio.wait([waiter, asyncio.ensure_future(stopping.wait())], return_when=asyncio.FIRST_COMPLETED)
    await gateway.stop()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the gateway's JSON config (written by deploy.serverctl)")
    parser.add_argument("--ready-file", type=Path, default=None, help="written once the listeners are bound")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(GatewayConfig.load(args.config), ready_file=args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
