"""The shared TorchServe handler: load once, then decode -> group -> explain -> encode for every batch.

TorchServe calls ``handle(data, context)`` with one dict per request of the batch and expects a list of the same
length back. Any exception escaping ``handle`` fails *every* request of the batch with UNAVAILABLE (which clients
retry), so this handler never lets one escape: each item is decoded and validated on its own, a bad item is answered
with an in-band error, and even a bug is turned into per-item ``INTERNAL`` answers. The one exception is a sticky CUDA
error, after which the device is unusable: the worker process exits so that TorchServe starts a fresh one.

The stage split follows TorchServe's ``BaseHandler`` (``preprocess`` / ``inference`` / ``postprocess``), without
inheriting it (it pulls in profiler, ONNX, IPEX and model-file loading that camserve does not use). Every stage takes
what it needs as arguments and returns its results; nothing about a request is ever stored on the handler, so no
request (and not item 0) decides anything for another.

How each item is routed and answered is in :mod:`handlers.serving._routing`; the model itself comes from the
:class:`~handlers.serving.ModelProvider` the archive's entry file passes to the handler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from camserve_proto.camserve.v1 import explain_pb2
from torch import nn

from handlers.engine import Explanation
from handlers.engine.errors import (
    CamserveError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
)
from handlers.preprocess import Preprocessor
from handlers.serving._budget import check_work_budget
from handlers.serving._config import ServingConfig, parse_config
from handlers.serving._encode import (
    describe_response,
    encode_response,
    error_message,
    error_response,
    model_info_json,
)
from handlers.serving._errors import serving_error, to_camserve_error
from handlers.serving._filters import answer_filters
from handlers.serving._health import select_device
from handlers.serving._parse import MAX_ID_LENGTH, parse_message
from handlers.serving._provider import ModelProvider
from handlers.serving._rest import encode_json, error_json
from handlers.serving._routing import (
    PROTOBUF_CONTENT_TYPES,
    ReplyKind,
    check_deadline,
    reply_kind,
    request_message,
    set_reply_headers,
)
from handlers.serving._sizing import check_response_size
from handlers.serving._types import Capabilities, ImageInput, ParsedRequest, Timing
from handlers.serving._visualize import answer_visualize

__all__ = ["ExplainHandler"]

_log = logging.getLogger(__name__)


def _versions() -> dict[str, str]:
    out: dict[str, str] = {"torch": str(torch.__version__)}
    for name, dist in (("camserve", "camserve-server"), ("torchserve", "torchserve")):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(dist)
    return out


# --------------------------------------------------------------------------------------------------- stage values
@dataclass(frozen=True, eq=False)
class Prepared:
    """One batch item after ``preprocess``: how to answer it and either a validated request or its error."""

    index: int
    reply: ReplyKind
    parsed: ParsedRequest | None = None
    error: CamserveError | None = None
    request_id: str = ""
    decode_ms: float = 0.0
    answer: bytes | None = None  # an item answered without the engine (filters)


@dataclass(frozen=True, eq=False)
class Served:
    """One batch item after ``inference``: outcomes by image index and its share of engine time."""

    item: Prepared
    outcomes: Mapping[int, Explanation | BaseException] = field(default_factory=dict)
    explain_ms: float = 0.0


@dataclass(frozen=True, eq=False)
class Loaded:
    """Everything ``initialize`` builds; read-only afterwards (model facts, never request state)."""

    config: ServingConfig
    device: torch.device
    model: nn.Module
    preprocessor: Preprocessor
    caps: Capabilities
    model_name: str
    model_version: str
    versions: Mapping[str, str]


# --------------------------------------------------------------------------------------------------- the handler
EngineT = TypeVar("EngineT")


class ExplainHandler(ABC, Generic[EngineT]):
    """Base of the classifier and VAE handlers. Subclasses build their engine and run one group of images.

    Subclasses implement :meth:`load_engine` (construct the engine, describe the model as :class:`Capabilities`),
    :meth:`group_key` (which images may share one engine call) and :meth:`explain_group` (one engine call).

    Args:
        provider: Builds the configured model once per worker (the archive's entry file passes it; see
            :class:`~handlers.serving.ModelProvider`).
    """

    kind: str = ""

    def __init__(self, provider: ModelProvider) -> None:
        self._provider = provider
        self.initialized = False
        self._loaded: Loaded | None = None
        self._explainer: EngineT | None = None

    @property
    def explainer(self) -> EngineT:
        """The engine built by ``initialize`` (set by :meth:`load_engine`)."""
        if self._explainer is None:
            raise InternalError("the handler is not initialized")
        return self._explainer

    # ------------------------------------------------------------------------------------------- load
    def initialize(self, context: Any) -> None:
        """Reads the model config, picks the device, builds the model and the engine (once per worker).

        The device is ``cuda:<gpu_id>`` when TorchServe assigned the worker a GPU (``system_properties["gpu_id"]``)
        and CUDA is usable, else the CPU (:func:`~handlers.serving.select_device`). With ``channels_last`` the model's
        weights are converted to NHWC here, once.

        Raises:
            CamserveError: A bad ``camserve`` config section, weights file or engine setup; TorchServe then reports
                the model as failed to load, with this message in the worker log.
        """
        config = parse_config(getattr(context, "model_yaml_config", None))
        if config.kind != self.kind:
            raise InvalidArgumentError(
                f"this is the {self.kind} handler but the model config says kind: {config.kind}", field="camserve.kind"
            )
        properties = getattr(context, "system_properties", None) or {}
        device = select_device(properties.get("gpu_id"))
        model, labels = self.build_model(config, Path(properties.get("model_dir") or "."))
        model = model.to(device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        preprocessor = Preprocessor(config.input_size, config.resize, config.mean, config.std)
        caps = self.load_engine(model, labels, config, device)
        manifest = getattr(context, "manifest", None) or {}
        self._loaded = Loaded(
            config=config,
            device=device,
            model=model,
            preprocessor=preprocessor,
            caps=caps,
            model_name=str(getattr(context, "model_name", "") or manifest.get("model", {}).get("modelName", "")),
            model_version=str(manifest.get("model", {}).get("modelVersion", "")),
            versions=_versions(),
        )
        self.initialized = True
        _log.info(
            "camserve %s handler ready: model %s on %s, input %s, methods %s, default layers %s",
            self.kind,
            config.model,
            device,
            config.input_size,
            caps.methods,
            caps.default_layers,
        )

    def build_model(self, config: ServingConfig, model_dir: Path) -> tuple[nn.Module, tuple[str, ...] | None]:
        """Builds the model through the provider with the archive's weights file, if any; returns it and its labels
        (the config's, else the provider's).

        Raises:
            NotFoundError: The configured weights file is not in the archive.
        """
        weights: Path | None = None
        if config.weights is not None:
            weights = model_dir / config.weights
            if not weights.is_file():
                raise NotFoundError(
                    f"weights file {config.weights!r} is not in the archive ({model_dir})", field="camserve.weights"
                )
        served = self._provider(config, weights)
        return served.module, config.labels if config.labels is not None else served.labels

    @property
    def loaded(self) -> Loaded:
        """What ``initialize`` built.

        Raises:
            InternalError: Called before ``initialize``.
        """
        if self._loaded is None:
            raise InternalError("the handler is not initialized")
        return self._loaded

    @abstractmethod
    def load_engine(
        self, model: nn.Module, labels: tuple[str, ...] | None, config: ServingConfig, device: torch.device
    ) -> Capabilities:
        """Builds the engine for ``model`` (kept on the subclass) and describes what it offers.

        ``labels`` are the class names by id (the config's, else the provider's), ``None`` when unnamed.
        """

    @abstractmethod
    def group_key(self, parsed: ParsedRequest, image: ImageInput) -> Hashable:
        """Images with equal keys (from any requests of the batch) run through the engine in one call."""

    @abstractmethod
    def explain_group(self, parsed: ParsedRequest, images: Sequence[ImageInput]) -> Sequence[Explanation]:
        """One engine call for images that share a group key; ``parsed`` is any one of their requests."""

    # ------------------------------------------------------------------------------------------- serve
    def handle(self, data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
        """TorchServe's entry point: one answer (bytes) per item of ``data``, in order.

        ``handle(None, context)`` only initialises (TorchServe's function entry points are loaded that way).
        """
        if not self.initialized:
            self.initialize(context)
        if data is None:
            return None
        try:
            prepared = self.preprocess(data, context)
            served = self.inference(prepared)
            return self.postprocess(served, context, batch_size=len(data))
        except Exception as exc:  # a bug of ours: answer every item in band instead of failing the batch
            error = serving_error(exc)
            return [self._answer_error(i, row, context, error) for i, row in enumerate(data)]

    def preprocess(self, data: Sequence[Any], context: Any) -> list[Prepared]:
        """Decodes and validates every item on its own; a bad item carries its error and never affects others."""
        return [self._prepare(i, row, context) for i, row in enumerate(data)]

    def _prepare(self, index: int, row: Any, context: Any) -> Prepared:
        start = time.perf_counter()
        reply = reply_kind(index, row, context)
        request_id = ""
        try:
            if reply == "describe":
                return Prepared(index, reply)
            if reply in ("filters", "visualize"):
                return Prepared(index, reply, answer=self._answer_direct(reply, row), decode_ms=_ms_since(start))
            check_deadline(row)
            message = request_message(row, reply)
            request_id = message.request_id[:MAX_ID_LENGTH]
            parsed = parse_message(message, self.loaded.caps, self.loaded.preprocessor)
            if reply == "json" and self.loaded.caps.kind == "vae":
                # curl users of a VAE want to see what it rebuilt
                output = dataclasses.replace(parsed.output, include_reconstruction=True)
                parsed = dataclasses.replace(parsed, output=output)
            if not parsed.describe:
                check_response_size(parsed, self.loaded.caps, as_json=reply == "json")
                check_work_budget(parsed, self.loaded.caps)
            return Prepared(index, reply, parsed, None, request_id, _ms_since(start))
        except Exception as exc:
            return Prepared(index, reply, None, to_camserve_error(exc), request_id, _ms_since(start))

    def _answer_direct(self, reply: ReplyKind, row: Any) -> bytes:
        """The answer of an item that needs no image pipeline: filters or activation maximisation."""
        loaded = self.loaded
        names = {"model_name": loaded.model_name, "model_version": loaded.model_version}
        if reply == "visualize":
            return answer_visualize(row, loaded.model, loaded.caps, loaded.config, **names)
        return answer_filters(row, loaded.model, max_response_bytes=loaded.caps.limits.max_response_bytes, **names)

    def inference(self, prepared: Sequence[Prepared]) -> list[Served]:
        """Groups the valid images of all items and runs each group through the engine once.

        An engine failure affects exactly the images of its group (which all asked for the same methods and
        layers); their items get the error in band.
        """
        groups: dict[Hashable, list[tuple[int, ImageInput]]] = {}
        for item in prepared:
            if item.parsed is None or item.parsed.describe:
                continue
            for image in item.parsed.valid_images:
                groups.setdefault(self.group_key(item.parsed, image), []).append((item.index, image))
        outcomes: dict[int, dict[int, Explanation | BaseException]] = {item.index: {} for item in prepared}
        explain_ms: dict[int, float] = dict.fromkeys(outcomes, 0.0)
        parsed_of = {item.index: item.parsed for item in prepared if item.parsed is not None}
        for members in groups.values():
            images = [image for _, image in members]
            first = parsed_of[members[0][0]]
            start = time.perf_counter()
            try:
                results: list[Explanation | BaseException] = list(self.explain_group(first, images))
                if len(results) != len(images):
                    raise InternalError(f"the engine returned {len(results)} results for {len(images)} images")
            except Exception as exc:
                results = [serving_error(exc)] * len(images)
            share = _ms_since(start) / len(images)
            for (item_index, image), result in zip(members, results, strict=True):
                outcomes[item_index][image.index] = result
                explain_ms[item_index] += share
        return [Served(item, outcomes[item.index], explain_ms[item.index]) for item in prepared]

    def postprocess(self, served: Sequence[Served], context: Any, *, batch_size: int) -> list[bytes]:
        """Encodes one answer per item: ExplainResponse bytes, REST JSON, or ModelInfo JSON."""
        return [self._encode(s, context, batch_size) for s in served]

    # ------------------------------------------------------------------------------------------- encoding
    def _encode(self, served: Served, context: Any, batch_size: int) -> bytes:
        item = served.item
        loaded = self.loaded
        try:
            if item.reply == "describe":
                set_reply_headers(context, item.index, "application/json", 200)
                return model_info_json(loaded.caps, model_name=loaded.model_name)
            if item.answer is not None:
                set_reply_headers(context, item.index, PROTOBUF_CONTENT_TYPES[0], None)
                return item.answer
            start = time.perf_counter()
            if item.reply == "json":
                return self._encode_json(served, context, batch_size, start)
            return self._encode_proto(served, context, batch_size, start)
        except Exception as exc:
            return self._answer_error(item.index, None, context, serving_error(exc), reply=item.reply)

    def _encode_proto(self, served: Served, context: Any, batch_size: int, start: float) -> bytes:
        item, loaded = served.item, self.loaded
        set_reply_headers(context, item.index, PROTOBUF_CONTENT_TYPES[0], None)
        if item.parsed is None:
            error = item.error or InternalError("the request was not parsed")
            return self._error_proto(error, item.request_id)
        if item.parsed.describe:
            response = describe_response(
                loaded.caps,
                request_id=item.request_id,
                model_name=loaded.model_name,
                model_version=loaded.model_version,
                versions=loaded.versions,
            )
            return bytes(response.SerializeToString())
        timing = Timing(item.decode_ms, served.explain_ms, 0.0, batch_size)
        response = encode_response(
            item.parsed,
            served.outcomes,
            loaded.caps,
            model_name=loaded.model_name,
            model_version=loaded.model_version,
            versions=loaded.versions,
            timing=timing,
        )
        response.timing.encode_ms = _ms_since(start)
        body = bytes(response.SerializeToString())
        if len(body) > loaded.caps.limits.max_response_bytes:
            # The bound said it fits; only the FLOAT16 -> FLOAT32 overflow fallback can get here.
            _log.warning("encoded response of %d bytes exceeds the limit; refused after the fact", len(body))
            return self._error_proto(_too_large(len(body), loaded.caps.limits.max_response_bytes), item.request_id)
        return body

    def _encode_json(self, served: Served, context: Any, batch_size: int, start: float) -> bytes:
        item, loaded = served.item, self.loaded
        if item.parsed is None:
            status, body = error_json(item.error or InternalError("the request was not parsed"), rest_body=True)
        else:
            timing = Timing(item.decode_ms, served.explain_ms, 0.0, batch_size)
            status, body = encode_json(
                item.parsed,
                served.outcomes,
                model_name=loaded.model_name,
                model_version=loaded.model_version,
                timing=timing,
                encode_start=start,
            )
            if len(body) > loaded.caps.limits.max_response_bytes:
                status, body = error_json(_too_large(len(body), loaded.caps.limits.max_response_bytes))
        set_reply_headers(context, item.index, "application/json", status)
        return body

    def _error_proto(self, error: BaseException, request_id: str) -> bytes:
        loaded = self._loaded
        response = error_response(
            error,
            request_id=request_id,
            model_name=loaded.model_name if loaded else "",
            model_version=loaded.model_version if loaded else "",
        )
        return bytes(response.SerializeToString())

    def _answer_error(
        self, index: int, row: Any, context: Any, error: CamserveError, *, reply: ReplyKind | None = None
    ) -> bytes:
        kind = reply or reply_kind(index, row, context)
        if kind in ("filters", "visualize"):
            set_reply_headers(context, index, PROTOBUF_CONTENT_TYPES[0], None)
            loaded = self._loaded
            cls = explain_pb2.FiltersResponse if kind == "filters" else explain_pb2.VisualizeResponse
            failed = cls(
                model_name=loaded.model_name if loaded else "", model_version=loaded.model_version if loaded else ""
            )
            failed.error.CopyFrom(error_message(error))
            return bytes(failed.SerializeToString())
        if kind == "proto":
            set_reply_headers(context, index, PROTOBUF_CONTENT_TYPES[0], None)
            return self._error_proto(error, "")
        status, body = error_json(error)
        set_reply_headers(context, index, "application/json", status)
        return body


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _too_large(size: int, limit: int) -> CamserveError:
    return ResourceExhaustedError(
        f"the response is {size} bytes, over the server's limit of {limit}; request less or use UINT8/PNG",
        field="output",
    )
