"""Everything the sync and asyncio clients share except the calls themselves: settings, requests, decoding."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import grpc
import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc
from camserve_proto.org.pytorch.serve.grpc.management import management_pb2, management_pb2_grpc
from google.protobuf import empty_pb2

from camserve._auth import TokenSource
from camserve._decode import decode_explain_response, decode_model_info
from camserve._images import is_single_image
from camserve._request import ExplainOptions, Input, build_request, image_messages
from camserve._results import ExplainResult, ModelEntry, ModelInfo, Timing
from camserve._transport import (
    DEFAULT_MAX_MESSAGE_BYTES,
    CallState,
    RetryPolicy,
    TlsLike,
    channel_credentials,
    channel_options,
    load_balancing_options,
    management_address_for,
    metadata,
    resolve_address,
)
from camserve.errors import CamserveError, Internal, InvalidArgument, from_code, from_rpc_error

# Upper bound on pages read by models(); TorchServe pages hold up to 1000 models.
MAX_PAGES = 100
_PAGE = 1000


@dataclass(frozen=True)
class PreparedBatch:
    """One request's worth of images: the converted messages and the images that failed on the client."""

    start: int
    count: int
    request: explain_pb2.ExplainRequest | None
    sent: tuple[int, ...]  # positions (0-based within the batch) of the images in `request`
    failed: Mapping[int, CamserveError]  # position -> client-side error
    ids: tuple[str, ...]  # every image's id, by position


class ModelPages:
    """The pages of one ``models()`` call: which page to ask for next, with what is left of the deadline.

    Both clients run the same loop, with or without ``await``::

        while (step := pages.next()) is not None:
            pages.add(call(step.request, timeout=step.timeout))
        return pages.entries
    """

    def __init__(self, ends: float) -> None:
        self.ends = ends
        self.entries: list[ModelEntry] = []
        self._token: int | None = 0
        self._pages = 0

    def next(self) -> PageStep | None:
        """The next page's request, or None after the last page (or :data:`MAX_PAGES` of them)."""
        if self._token is None or self._pages >= MAX_PAGES:
            return None
        request = management_pb2.ListModelsRequest(limit=_PAGE, next_page_token=self._token)
        return PageStep(request, max(self.ends - time.monotonic(), 1e-3))

    def add(self, response: management_pb2.ManagementResponse) -> None:
        """Reads one page's models and the next page's token.

        Raises:
            Internal: The management API's answer is not the JSON TorchServe writes.
        """
        try:
            data = json.loads(response.msg)
            entries = [ModelEntry(name=str(m["modelName"]), url=str(m.get("modelUrl", ""))) for m in data["models"]]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise Internal(f"malformed ListModels answer from the management API ({type(exc).__name__})") from None
        self.entries.extend(entries)
        self._pages += 1
        token = data.get("nextPageToken")
        self._token = None if len(entries) < _PAGE or token in (None, "") else int(token)


class PageStep(NamedTuple):
    """One ``ListModels`` request and its share of the call's deadline, seconds."""

    request: management_pb2.ListModelsRequest
    timeout: float


class ClientBase:
    """Settings, channels and request/response handling common to :class:`~camserve.Client` and ``AsyncClient``.

    The two differ only in how a call waits: a subclass names the gRPC module its channels come from
    (:attr:`_grpc`: ``grpc`` or ``grpc.aio``, which open channels with the same arguments) and makes the calls.
    The constructor's arguments are documented on :class:`~camserve.Client`.
    """

    #: The gRPC module that opens this client's channels: ``grpc`` (blocking) or ``grpc.aio`` (asyncio).
    _grpc: ClassVar[Any]

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        management_token: str | None = None,
        management_address: str | None = None,
        tls: TlsLike = False,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.2,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        headers: Mapping[str, str] | None = None,
        channel_args: Sequence[tuple[str, object]] = (),
        load_balancing: str | None = None,
    ) -> None:
        self.address = resolve_address(address)
        self.management_address = management_address or management_address_for(self.address)
        if not timeout or timeout <= 0:
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}", field="timeout")
        self.timeout = float(timeout)
        self.retry_policy = RetryPolicy(retries=int(retries), initial=float(backoff), maximum=max(5.0, backoff))
        self.tokens = TokenSource(token=token, token_file=token_file, management_token=management_token)
        self.headers = dict(headers or {})
        self._credentials = channel_credentials(tls)
        self.load_balancing = load_balancing
        self._channel_options = channel_options(
            max_message_bytes, [*load_balancing_options(load_balancing), *channel_args]
        )
        self._rng = random.Random()
        self._closed = False
        self._channel = self._open(self.address)
        self._stub = inference_pb2_grpc.InferenceAPIsServiceStub(self._channel)
        self._management_channel: Any = None

    def _open(self, address: str) -> Any:
        if self._credentials is None:
            return self._grpc.insecure_channel(address, options=self._channel_options)
        return self._grpc.secure_channel(address, self._credentials, options=self._channel_options)

    def _management_stub(self) -> management_pb2_grpc.ManagementAPIsServiceStub:
        """The management API's stub; its channel is opened on first use (only ``models()`` needs it)."""
        if self._management_channel is None:
            self._management_channel = self._open(self.management_address)
        return management_pb2_grpc.ManagementAPIsServiceStub(self._management_channel)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(address={self.address!r}, timeout={self.timeout:g})"

    # ---- per call ----

    def _state(self, timeout: float | None, kind: str = "inference", request: object = None) -> CallState:
        if self._closed:
            raise InvalidArgument("the client is closed", field="client")
        size = request.ByteSize() if hasattr(request, "ByteSize") else 0
        seconds = self.timeout if timeout is None else timeout
        return CallState(seconds, self.retry_policy, self.tokens, self._rng, kind, request_bytes=size)

    @staticmethod
    def _retry_delay(state: CallState, exc: grpc.RpcError | CamserveError) -> float:
        """After a failed attempt: how long to wait before the next one; raises the call's error if none is due."""
        error = from_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc
        delay = state.next_step(error)
        if delay is None:
            raise state.final(error) from None
        return delay

    def _metadata(self, kind: str, headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
        key = self.tokens.management_key() if kind == "management" else self.tokens.inference_key()
        merged = {**self.headers, **(headers or {})}
        return metadata(key, merged)

    # ---- ping ----

    @staticmethod
    def _ping_request() -> empty_pb2.Empty:
        return empty_pb2.Empty()

    @staticmethod
    def _ping_status(response: inference_pb2.TorchServeHealthResponse) -> str:
        """TorchServe's health text is JSON like {"status": "Healthy"}; returns the status."""
        text = response.health
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError):
            return text.strip()
        if isinstance(data, dict) and isinstance(data.get("status"), str):
            return str(data["status"])
        return text.strip()

    # ---- describe / models ----

    @staticmethod
    def _describe_request(model: str, version: str) -> inference_pb2.PredictionsRequest:
        check_model(model)
        request = explain_pb2.ExplainRequest(describe=True)
        return inference_pb2.PredictionsRequest(
            model_name=model, model_version=version, input={"request": request.SerializeToString()}
        )

    @staticmethod
    def _decode_describe(response: inference_pb2.PredictionResponse, model: str) -> ModelInfo:
        message = explain_pb2.ExplainResponse()
        try:
            message.ParseFromString(response.prediction)
        except Exception as exc:  # unreadable payload, whatever protobuf raises for it
            raise Internal(f"malformed response: not an ExplainResponse ({type(exc).__name__})") from None
        if message.HasField("error") and message.error.code:
            raise from_code(message.error.code, message.error.message, message.error.field)
        if not message.HasField("model_info"):
            raise Internal(f"malformed response: model {model!r} answered a describe request without model_info")
        return decode_model_info(message, model)

    def _model_pages(self, timeout: float | None) -> ModelPages:
        """The paging of one ``models()`` call; ``timeout`` bounds all of its pages."""
        return ModelPages(time.monotonic() + (self.timeout if timeout is None else timeout))

    # ---- explain ----

    @staticmethod
    def _as_list(images: object) -> tuple[list[object], bool]:
        """Splits the call's images into a list, remembering whether one image was given."""
        if is_single_image(images):
            return [images], True
        if isinstance(images, np.ndarray):
            return list(images), False
        items = list(images)  # type: ignore[call-overload]
        if not items:
            raise InvalidArgument("no images given", field="images")
        return items, False

    @staticmethod
    def _prepare(items: Sequence[object], start: int, options: ExplainOptions, request_id: str) -> PreparedBatch:
        """Converts one batch of images; images that cannot be sent become errors instead of failing the batch."""
        messages = []
        sent = []
        ids = []
        failed: dict[int, CamserveError] = {}
        for offset, item in enumerate(items):
            index = start + offset
            given = item.id if isinstance(item, Input) else None
            ids.append(given if given is not None else str(index))
            try:
                messages.extend(image_messages([item], index))
                sent.append(offset)
            except CamserveError as exc:
                failed[offset] = exc
        request = build_request(messages, options, request_id) if messages else None
        return PreparedBatch(
            start=start, count=len(items), request=request, sent=tuple(sent), failed=failed, ids=tuple(ids)
        )

    @staticmethod
    def _predictions_request(
        model: str, version: str, request: explain_pb2.ExplainRequest
    ) -> inference_pb2.PredictionsRequest:
        return inference_pb2.PredictionsRequest(
            model_name=model, model_version=version, input={"request": request.SerializeToString()}
        )

    @staticmethod
    def _assemble(
        batch: PreparedBatch,
        response: inference_pb2.PredictionResponse | None,
        model: str,
        elapsed_ms: float,
    ) -> list[ExplainResult]:
        """Merges server results and client-side failures back into input order."""
        server: list[ExplainResult] = []
        if response is not None:
            _, decoded = decode_explain_response(response.prediction, len(batch.sent), 0, elapsed_ms)
            server = decoded
        out: list[ExplainResult] = []
        by_position = dict(zip(batch.sent, server, strict=True))
        request_index = {offset: k for k, offset in enumerate(batch.sent)}
        for offset in range(batch.count):
            index = batch.start + offset
            if offset in batch.failed:
                failed = ExplainResult(
                    index=index,
                    id=batch.ids[offset],
                    predictions=(),
                    maps=types.MappingProxyType({}),
                    reconstruction=None,
                    geometry=None,
                    timing=Timing(),
                    model_name=model,
                    error=batch.failed[offset],
                )
                out.append(failed)
            else:
                r = by_position[offset]
                error = _renumber(r.error, request_index[offset], index)
                out.append(dataclasses.replace(r, index=index, model_name=r.model_name or model, error=error))
        return out

    @staticmethod
    def _finish(results: list[ExplainResult], single: bool, strict: bool) -> ExplainResult | list[ExplainResult]:
        if single:
            return results[0].raise_for_error()
        if strict:
            for r in results:
                r.raise_for_error()
        return results


def _renumber(error: CamserveError | None, sent_index: int, index: int) -> CamserveError | None:
    """Rewrites a server field path ``images[k]...`` (position in the request sent) to the caller's numbering."""
    prefix = f"images[{sent_index}]"
    if error is None or sent_index == index or not error.field.startswith(prefix):
        return error
    return type(error)(error.message, code=error.code, field=f"images[{index}]{error.field[len(prefix) :]}")


def check_model(model: object) -> str:
    """Validates a model name argument."""
    if not isinstance(model, str) or not model:
        raise InvalidArgument(f"model must be a non-empty model name, got {model!r}", field="model")
    return model
