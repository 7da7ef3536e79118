"""The synchronous client."""

from __future__ import annotations

import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, Unpack, overload

import grpc

from camserve._base import ClientBase, PreparedBatch, check_model
from camserve._filters import Filters, decode_filters, filters_request
from camserve._images import ImageLike
from camserve._options import ExplainCall, ExplainManyArgs, ExplainOneArgs, explain_call, explain_many_call
from camserve._results import ExplainResult, ModelEntry, ModelInfo
from camserve._visualize import Visualization, VisualizeArgs, decode_visualize, visualize_request
from camserve.errors import CamserveError, InvalidArgument

T = TypeVar("T")


def chunks(images: Iterable[object], size: int) -> Iterator[tuple[int, list[object]]]:
    """Yields ``(start index, up to size images)`` from any iterable, lazily."""
    iterator = iter(images)
    start = 0
    while chunk := list(itertools.islice(iterator, size)):
        yield start, chunk
        start += len(chunk)


class Client(ClientBase):
    """A connection to a camserve server (TorchServe's gRPC inference API), safe to share between threads.

    Use it as a context manager so its channels are closed::

        with camserve.Client("127.0.0.1:7070", token_file="key_file.json") as client:
            result = client.explain("cat.jpg", model="imagenet-efficientnet-lite0", methods=["gradcam"])

    Every call has a deadline (``timeout``, per call or the client's default) that bounds the whole call including
    retries; only transport failures (server unreachable or restarting: UNAVAILABLE) are retried, with
    exponential backoff and jitter. Every failure is a :class:`camserve.CamserveError`.

    Args:
        address: ``host:port`` of the gRPC inference API, or a gRPC target naming several servers
            (``dns:///camserve-headless:7070``, ``ipv4:10.0.0.1:7070,10.0.0.2:7070``). Default:
            ``$CAMSERVE_ADDRESS``, else 127.0.0.1:7070.
        token: The inference key. Precedence: ``token``, ``token_file``, ``$CAMSERVE_TOKEN``,
            ``$CAMSERVE_TOKEN_FILE``; with none the calls carry no token (servers with token auth off).
        token_file: Path of TorchServe's ``key_file.json`` (both keys are read from it; it is re-read when it
            changes, e.g. after a server restart) or of a text file holding one key.
        management_token: The management key for :meth:`models` (default: ``$CAMSERVE_MANAGEMENT_TOKEN``, else
            the token file's management key).
        management_address: ``host:port`` of the gRPC management API; default: the inference port + 1 (of every
            address in a static list).
        tls: False for plaintext; True for TLS with the system's root certificates; PEM bytes or a PEM file path
            for TLS with those roots.
        timeout: Default deadline of every call, seconds.
        retries: How many times a call is retried after a transport failure (0 disables retries).
        backoff: Upper bound of the first retry delay, seconds; it doubles per retry (capped at 5 s), jittered.
        max_message_bytes: Largest message sent or received (default 64 MiB; grpcio's 4 MiB default is below
            TorchServe's 6,553,500 B response limit).
        headers: Metadata sent with every call (per-call ``headers`` add to and override these).
        channel_args: Extra gRPC channel arguments, e.g. ``[("grpc.ssl_target_name_override", "camserve")]``.
        load_balancing: ``"round_robin"`` spreads calls over every server the address resolves to (a headless
            Service's pods, a static list); None or ``"pick_first"`` (grpcio's default) uses one of them.

    Raises:
        InvalidArgument: A setting is malformed (address, timeout, retries, certificates, load balancing).
    """

    _grpc = grpc

    def close(self) -> None:
        """Closes the channels; later calls raise. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._channel.close()
        if self._management_channel is not None:
            self._management_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self,
        method: Callable[..., T],
        request: object,
        *,
        timeout: float | None,
        headers: Mapping[str, str] | None,
        kind: str = "inference",
    ) -> tuple[T, float]:
        """One logical call: deadline, metadata, retries. Returns the response and the elapsed milliseconds."""
        state = self._state(timeout, kind, request)
        while True:
            remaining = state.remaining()  # raises DeadlineExceeded, as it is, when no time is left
            try:
                response = method(request, timeout=remaining, metadata=self._metadata(kind, headers))
                return response, state.elapsed_ms()
            except (grpc.RpcError, CamserveError) as exc:  # CamserveError: e.g. an unreadable token file
                delay = self._retry_delay(state, exc)
            time.sleep(delay)

    # ---- public calls ----

    def ping(self, *, timeout: float | None = None, headers: Mapping[str, str] | None = None) -> str:
        """Asks the server for its health; returns TorchServe's status text, e.g. ``"Healthy"``.

        Raises:
            Unavailable: The server cannot be reached (after retries).
            Unauthenticated: The inference key was refused (TorchServe protects Ping too).
        """
        response, _ = self._call(self._stub.Ping, self._ping_request(), timeout=timeout, headers=headers)
        return self._ping_status(response)

    def describe(
        self,
        model: str,
        *,
        version: str = "",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ModelInfo:
        """What ``model`` offers: kind, methods, layers, labels, input size and limits (via the contract).

        Raises:
            NotFound: No such model on the server.
        """
        request = self._describe_request(model, version)
        response, _ = self._call(self._stub.Predictions, request, timeout=timeout, headers=headers)
        return self._decode_describe(response, model)

    def filters(
        self,
        model: str,
        *,
        layers: str | Sequence[str] | None = None,
        max_channels: int | None = None,
        version: str = "",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Filters:
        """A model's convolution kernels: the first layer's as RGB tiles, deeper ones summarised per channel.

        Args:
            model: The model's name on the server.
            layers: ``Conv2d`` layer names (``.conv_layers`` of the answer lists them); None = the first one.
            max_channels: Show at most this many output channels per layer (the first ones); None = all.
            version: The model version (``""``: the default).
            timeout: Deadline for this call, seconds (default: the client's).
            headers: Extra metadata for this call.

        Raises:
            InvalidArgument: A bad argument, or a layer that is not a convolution.
            NotFound: No such model or layer.
            ResourceExhausted: The answer would exceed the server's response limit (set ``max_channels``).
        """
        check_model(model)
        request = filters_request(model, version, layers, max_channels, uuid.uuid4().hex)
        response, _ = self._call(self._stub.Predictions, request, timeout=timeout, headers=headers)
        return decode_filters(response)

    def visualize(
        self,
        model: str,
        *,
        version: str = "",
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
        **options: Unpack[VisualizeArgs],
    ) -> Visualization:
        """An input optimised by gradient ascent to excite a class (``target``) or a channel (``layer``, ``channel``).

        Regularised (L2 decay, jitter, a blur every few steps), monotone (the score never decreases), seeded, and
        bounded by the server's step and time limits; ``init`` (a previous ``.image``) continues a run, and
        :meth:`visualize_rounds` chains rounds. The options (keywords): ``target``, ``layer``, ``channel``,
        ``steps``, ``lr``, ``l2``, ``jitter``, ``blur_every``, ``blur_sigma``, ``seed`` (default 0), ``deadline_ms``,
        ``init``; unset ones take the server's defaults.

        Raises:
            TypeError: A keyword ``visualize`` does not take.
            InvalidArgument: A bad argument (named in ``field``).
            NotFound: No such model, class label or layer.
            ResourceExhausted: More steps or time than the server allows per request.
        """
        check_model(model)
        request = visualize_request(model, version, uuid.uuid4().hex, options)
        response, _ = self._call(self._stub.Predictions, request, timeout=timeout, headers=headers)
        return decode_visualize(response)

    def visualize_rounds(self, model: str, *, rounds: int, **options: Any) -> Iterator[Visualization]:
        """``rounds`` bounded :meth:`visualize` requests, each starting from the previous image; yields each.

        The progress of a long optimisation, one round at a time, without holding a server worker for long.

        Raises:
            InvalidArgument: ``rounds`` is not a positive integer, or a bad option.
        """
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise InvalidArgument(f"rounds must be a positive integer, got {rounds!r}", field="rounds")
        init = options.pop("init", None)
        for _ in range(rounds):
            result = self.visualize(model, init=init, **options)
            init = result.image
            yield result

    def models(self, *, timeout: float | None = None, headers: Mapping[str, str] | None = None) -> list[ModelEntry]:
        """The models registered on the server, from TorchServe's gRPC management API (management key).

        The timeout bounds the whole listing (all pages).

        Raises:
            Unauthenticated: No management key, or the server refused it.
            Unavailable: The management port cannot be reached.
        """
        stub = self._management_stub()
        pages = self._model_pages(timeout)
        while (step := pages.next()) is not None:
            response, _ = self._call(
                stub.ListModels, step.request, timeout=step.timeout, headers=headers, kind="management"
            )
            pages.add(response)
        return pages.entries

    @overload
    def explain(self, images: ImageLike, *, model: str, **options: Unpack[ExplainOneArgs]) -> ExplainResult: ...

    @overload
    def explain(
        self, images: Sequence[Any], *, model: str, **options: Unpack[ExplainOneArgs]
    ) -> list[ExplainResult]: ...

    def explain(
        self, images: Any, *, model: str, **options: Unpack[ExplainOneArgs]
    ) -> ExplainResult | list[ExplainResult]:
        """Predictions and explanation maps for one image or a list of images, in one request.

        Args:
            images: One image, or a list/tuple of them (or a 4-D numpy batch ``N x H x W x 3``). An image is a file
                path, encoded bytes (sent as they are), a PIL image (sent as lossless PNG) or a numpy array
                ``H x W x 3`` / ``H x W``, uint8 or float in [0, 1] (sent as raw pixels). Wrap an image in
                :class:`camserve.Input` to give it an id, its own target or its own regions.
            model: The model's name on the server.
            **options: Keyword options, each optional:

                - ``version`` (str): the model version; ``""`` (default) = the default version.
                - ``methods`` (str or list): method names (see :meth:`describe`); None = the model's defaults.
                - ``layers`` (str or list): layer names (dotted); several = a layer sweep; None = the defaults.
                - ``target``: what to explain: a class id, a class label, or a list of only ids or only labels
                  (every image gets all of them). None = the top-1 class. Exclusive with ``top_k``.
                - ``top_k`` (int): explain each image's k highest-scoring classes.
                - ``regions``: VAE models: boxes ``(x0, y0, x1, y1)`` (half-open, reconstruction pixels) and/or
                  2-D boolean masks, shared by every image (per image: :class:`camserve.Input`).
                - ``encoding`` (str): how maps travel: ``"float16"`` (default), ``"float32"``, ``"uint8"`` or
                  ``"png"``.
                - ``resolution`` (str): ``"native"`` (default; e.g. 7x7 for Grad-CAM) or ``"input"`` (the model
                  input size).
                - ``reconstruction`` (bool): VAE models: also return the reconstruction (default False).
                - ``top_predictions`` (int): how many predictions per image (server default 5).
                - ``steps`` (int), ``rule`` (str), ``baseline`` (str): Integrated Gradients: interpolation steps
                  (default 50, bounded per model, see ``describe().method_costs``), ``"gausslegendre"`` (default)
                  or a Riemann rule (``"riemann_right"``, ``"riemann_left"``, ``"riemann_middle"``,
                  ``"riemann_trapezoid"``), and ``"black"`` (default), ``"blurred"`` or ``"noise"``.
                - ``samples`` (int), ``noise`` (float), ``seed`` (int): SmoothGrad (the ``smoothgrad_*`` methods):
                  noisy copies (default 20), noise standard deviation as a fraction of the image's value range
                  (default 0.15), and the seed of the noise (and of the ``"noise"`` baseline).
                - ``feature_maps`` (int or :class:`camserve.FeatureMaps`): classifiers: also return the top-n
                  channels of the layers (``.feature_maps``), by mean activation or Grad-CAM weight.
                - ``consistency`` (True or :class:`camserve.Consistency`): classifiers: also explain flipped,
                  shifted and rotated copies and return how well each map agrees (``.consistency``).
                - ``strict`` (bool): for a list: raise the first failed image's error instead of returning it in
                  ``.error`` (default False).
                - ``request_id`` (str): your id for the request, for tracing (default: a random one).
                - ``timeout`` (float): deadline for this call, seconds (default: the client's).
                - ``headers`` (mapping): extra metadata for this call.

        Returns:
            One :class:`camserve.ExplainResult` for one image; a list in input order for a list. In a list, an
            image that failed carries its error in ``.error`` (see ``raise_for_error()``) and the others are
            unaffected.

        Raises:
            InvalidArgument, NotFound, ResourceExhausted, ...: The request was rejected as a whole (e.g. an unknown
                method or too many images), or the single image given failed. Transport and auth failures raise
                :class:`camserve.Unavailable`, :class:`camserve.Unauthenticated`, :class:`camserve.DeadlineExceeded`.
            TypeError: A keyword not listed above.
        """
        check_model(model)
        call = explain_call(options)
        items, single = self._as_list(images)
        batch = self._prepare(items, 0, call.options, call.request_id or uuid.uuid4().hex)
        results = self._run_batch(batch, model, call)
        return self._finish(results, single, call.strict)

    def _run_batch(self, batch: PreparedBatch, model: str, call: ExplainCall) -> list[ExplainResult]:
        if batch.request is None:
            return self._assemble(batch, None, model, 0.0)
        request = self._predictions_request(model, call.version, batch.request)
        response, elapsed = self._call(self._stub.Predictions, request, timeout=call.timeout, headers=call.headers)
        return self._assemble(batch, response, model, elapsed)

    def explain_many(
        self, images: Iterable[Any], *, model: str, **options: Unpack[ExplainManyArgs]
    ) -> Iterator[ExplainResult]:
        """Explains a stream of images with bounded concurrency; yields one result per image, in input order.

        Images are read lazily from ``images`` (any iterable, e.g. a generator over a folder) in requests of
        ``batch_size`` images (default 1); at most ``concurrency`` requests (default 4) are in flight, so memory
        stays bounded however long the stream. The other options are as for :meth:`explain` (all but
        ``request_id``); ``timeout`` applies to each request. Images that fail carry their error in ``.error``
        (``strict=True`` raises it instead, in order); an error that concerns every request (transport, auth, an
        invalid option) is raised. Closing the generator early cancels the requests not yet sent.

        TorchServe batches concurrent requests on the server (``batchSize``/``maxBatchDelay``), so
        ``batch_size=1`` with ``concurrency`` about the server's batch size is a good start.
        """
        check_model(model)
        call = explain_many_call(options)
        self._state(call.timeout)  # validates timeout and that the client is open, before the first image is read
        return self._stream(images, model, call)

    def _stream(self, images: Iterable[Any], model: str, call: ExplainCall) -> Iterator[ExplainResult]:
        def work(start: int, items: list[object]) -> list[ExplainResult]:
            batch = self._prepare(items, start, call.options, uuid.uuid4().hex)
            return self._run_batch(batch, model, call)

        source = chunks(images, call.batch_size)
        pool = ThreadPoolExecutor(max_workers=call.concurrency, thread_name_prefix="camserve")
        pending: deque[Future[list[ExplainResult]]] = deque()
        try:
            for start, items in itertools.islice(source, call.concurrency):
                pending.append(pool.submit(work, start, items))
            while pending:
                results = pending.popleft().result()
                following = next(source, None)
                if following is not None:
                    pending.append(pool.submit(work, *following))
                for result in results:
                    if call.strict:
                        result.raise_for_error()
                    yield result
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
