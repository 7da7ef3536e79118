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

Inputs accepted per item (``data[i]``):

- ``{"request": <ExplainRequest bytes>}`` — gRPC (``PredictionsRequest.input["request"]``) or a REST multipart field
  named ``request``. Answered with ``ExplainResponse`` bytes.
- ``{"body": <bytes>}`` or ``{"data": <bytes>}`` with content type ``application/x-protobuf`` (or
  ``application/protobuf``) — an ``ExplainRequest`` POSTed over REST. Answered with ``ExplainResponse`` bytes and
  that content type; errors stay in band (HTTP 200), exactly as over gRPC.
- ``{"body" | "data": <image bytes>}`` with any other content type — a raw image (``curl -T cat.jpg URL``, or
  multipart ``curl -F data=@cat.jpg -F methods=gradcam -F top_k=3 URL``: form fields ``methods``, ``layers``,
  ``top_k``, ``regions`` arrive as further keys; TorchServe 0.12 drops query strings). Answered with JSON
  (:func:`handlers.serving._codec.encode_json`), with a real HTTP status on errors (400/404/413/500/503).
- TorchServe's describe call (``GET /models/<name>?customized=true``, header ``describe: True``): ``ModelInfo`` JSON.

Note for curl users: ``curl --data-binary @img.png`` sends ``application/x-www-form-urlencoded``, which TorchServe
parses as a form: the image is mangled or refused before the handler runs (HTTP 500 from the frontend, or an empty
item, which is answered 400 with the right command). Use ``curl -T img.png`` or add
``-H 'Content-Type: application/octet-stream'``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar

import torch
from camserve_proto.camserve.v1 import explain_pb2
from torch import nn

from handlers.engine import MapKey, detect_layout
from handlers.engine.errors import (
    CamserveError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from handlers.serving._codec import (
    Capabilities,
    ImageInput,
    ImageOutcome,
    MethodShape,
    ParsedRequest,
    Timing,
    check_response_size,
    decode_request,
    encode_json,
    encode_response,
    error_json,
    error_response,
    model_info,
    model_info_json,
    parse_message,
    request_from_rest,
    to_camserve_error,
)
from handlers.serving._config import ServingConfig, parse_config
from handlers.serving._images import Preprocessor

__all__ = [
    "PROTOBUF_CONTENT_TYPES",
    "STICKY_CUDA_ERRORS",
    "ExplainHandler",
    "exit_if_sticky_cuda_error",
    "is_sticky_cuda_error",
    "measure_method_shapes",
    "probe_layers",
    "select_device",
]

_log = logging.getLogger(__name__)

ReplyKind = Literal["proto", "json", "describe"]

REQUEST_KEY: Final = "request"
#: Input key with the caller's deadline (Unix time, ms), added by the gateway (deploy/gateway.py): an item whose
#: deadline has passed while it waited in TorchServe's queue is answered DEADLINE_EXCEEDED without being computed.
DEADLINE_KEY: Final = "camserve-deadline-ms"
BODY_KEYS: Final = ("body", "data")
PROTOBUF_CONTENT_TYPES: Final = ("application/x-protobuf", "application/protobuf", "application/vnd.google.protobuf")
#: Messages of CUDA errors after which the CUDA context is corrupt and every later call fails too.
STICKY_CUDA_ERRORS: Final = (
    "an illegal memory access was encountered",
    "device-side assert triggered",
    "unspecified launch failure",
    "misaligned address",
    "an illegal instruction was encountered",
    "uncorrectable ECC error",
    "CUDA error: unknown error",
)
#: Exit status of a worker that leaves because of a sticky CUDA error (EX_SOFTWARE).
STICKY_EXIT_STATUS: Final = 70


# --------------------------------------------------------------------------------------------------- worker health
def is_sticky_cuda_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a CUDA error that poisons the whole process."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if any(marker in text for marker in STICKY_CUDA_ERRORS):
            return True
        current = current.__cause__ or current.__context__
    return False


def exit_if_sticky_cuda_error(exc: BaseException, *, exit_fn: Callable[[int], Any] | None = None) -> bool:
    """Ends the worker process after a sticky CUDA error so TorchServe restarts it on a clean device.

    ``os._exit`` skips Python's cleanup on purpose: finalisers would touch the broken CUDA context and hang. The
    in-flight batch gets an error from TorchServe when the worker dies.

    Args:
        exc: The exception met while serving.
        exit_fn: The process exit; ``None`` = ``os._exit`` (looked up at call time so tests can replace it).

    Returns:
        False when ``exc`` is not sticky (nothing happens); True if ``exit_fn`` returned (tests only).
    """
    if not is_sticky_cuda_error(exc):
        return False
    _log.critical("sticky CUDA error, the worker exits so that TorchServe restarts it: %s", exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    (exit_fn or os._exit)(STICKY_EXIT_STATUS)
    return True


def _serving_error(exc: BaseException) -> CamserveError:
    """The in-band error for an exception met while serving; exits the worker first on a sticky CUDA error."""
    if exit_if_sticky_cuda_error(exc):
        return UnavailableError("the worker's GPU failed and the worker is restarting; retry the request")
    return to_camserve_error(exc)


def select_device(gpu_id: object) -> torch.device:
    """``cuda:<gpu_id>`` when TorchServe assigned a GPU and CUDA is usable, else the CPU."""
    if gpu_id is None or not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        index = int(str(gpu_id))
    except ValueError:
        _log.warning("ignoring unusable gpu_id %r; running on the CPU", gpu_id)
        return torch.device("cpu")
    if not 0 <= index < torch.cuda.device_count():
        _log.warning("gpu_id %d is not a visible CUDA device; running on the CPU", index)
        return torch.device("cpu")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _versions() -> dict[str, str]:
    out: dict[str, str] = {"torch": str(torch.__version__)}
    for name, dist in (("camserve", "camserve-server"), ("torchserve", "torchserve")):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(dist)
    return out


# --------------------------------------------------------------------------------------------------- model facts
def probe_layers(
    model: nn.Module, layers: Sequence[str], input_size: tuple[int, int], device: torch.device
) -> tuple[dict[str, tuple[int, int]], tuple[int, ...]]:
    """One forward pass on zeros: every layer's spatial grid ``(h, w)`` and the model's output shape.

    The grids size responses before any request runs (a CAM-style map has its layer's grid). Hooks are removed in
    ``finally``; nothing else about the model changes.

    Raises:
        InvalidArgumentError: A layer was not called, or its output has no spatial grid at ``input_size``.
    """
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def recorder(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape)

        return hook

    try:
        for name in layers:
            handles.append(modules[name].register_forward_hook(recorder(name)))
        with torch.no_grad():
            output = model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    grids: dict[str, tuple[int, int]] = {}
    for name in layers:
        if name not in shapes:
            raise InvalidArgumentError(f"layer {name!r} was not called in the forward pass", field="layers")
        layout = detect_layout(shapes[name][1:], input_size)
        if layout is None:
            raise InvalidArgumentError(f"layer {name!r} has no spatial grid at {input_size}", field="layers")
        grids[name] = (layout.height, layout.width)
    out_shape = tuple(int(d) for d in output.shape) if isinstance(output, torch.Tensor) else ()
    return grids, out_shape


def measure_method_shapes(
    maps: Mapping[MapKey, torch.Tensor], layer: str, grids: Mapping[str, tuple[int, int]]
) -> tuple[dict[str, MethodShape], frozenset[str]]:
    """Which methods give layer-grid maps and which fixed-shape maps, read from a dry run's maps on ``layer``.

    Returns:
        The shape rule per method, and the methods that give one map per layer (layer name not empty).
    """
    shapes: dict[str, MethodShape] = {}
    layer_methods: set[str] = set()
    for key, values in maps.items():
        shape = tuple(int(d) for d in values.shape)
        if key.layer:
            layer_methods.add(key.method)
            on_grid = shape == grids[layer]
            shapes[key.method] = MethodShape(grid=True) if on_grid else MethodShape(grid=False, fixed=shape)
        else:
            shapes[key.method] = MethodShape(grid=False, fixed=shape)
    return shapes, frozenset(layer_methods)


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


@dataclass(frozen=True, eq=False)
class Served:
    """One batch item after ``inference``: outcomes by image index and its share of engine time."""

    item: Prepared
    outcomes: Mapping[int, ImageOutcome | BaseException] = field(default_factory=dict)
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
    """

    kind: str = ""

    def __init__(self) -> None:
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
        model = self.build_model(config, Path(properties.get("model_dir") or "."))
        model = model.to(device)
        preprocessor = Preprocessor(config.input_size, config.resize, config.mean, config.std)
        caps = self.load_engine(model, config, device)
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

    def build_model(self, config: ServingConfig, model_dir: Path) -> nn.Module:
        """Builds the model through ``model_store.zoo`` with the archive's weights file, if any.

        Raises:
            NotFoundError: The configured weights file is not in the archive.
        """
        from model_store import zoo

        weights: Path | None = None
        if config.weights is not None:
            weights = model_dir / config.weights
            if not weights.is_file():
                raise NotFoundError(
                    f"weights file {config.weights!r} is not in the archive ({model_dir})", field="camserve.weights"
                )
        return zoo.build(config.model, weights)

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
    def load_engine(self, model: nn.Module, config: ServingConfig, device: torch.device) -> Capabilities:
        """Builds the engine for ``model`` (kept on the subclass) and describes what it offers."""

    @abstractmethod
    def group_key(self, parsed: ParsedRequest, image: ImageInput) -> Hashable:
        """Images with equal keys (from any requests of the batch) run through the engine in one call."""

    @abstractmethod
    def explain_group(self, parsed: ParsedRequest, images: Sequence[ImageInput]) -> list[ImageOutcome]:
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
            error = _serving_error(exc)
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
            check_deadline(row)
            message = request_message(row, reply)
            if reply == "json" and self.loaded.caps.kind == "vae":
                message.output.include_reconstruction = True  # curl users of a VAE want to see what it rebuilt
            request_id = message.request_id[:256]
            parsed = parse_message(message, self.loaded.caps, self.loaded.preprocessor)
            if not parsed.describe:
                check_response_size(parsed, self.loaded.caps, as_json=reply == "json")
            return Prepared(index, reply, parsed, None, request_id, _ms_since(start))
        except Exception as exc:
            return Prepared(index, reply, None, to_camserve_error(exc), request_id, _ms_since(start))

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
        outcomes: dict[int, dict[int, ImageOutcome | BaseException]] = {item.index: {} for item in prepared}
        explain_ms: dict[int, float] = dict.fromkeys(outcomes, 0.0)
        parsed_of = {item.index: item.parsed for item in prepared if item.parsed is not None}
        for members in groups.values():
            images = [image for _, image in members]
            first = parsed_of[members[0][0]]
            start = time.perf_counter()
            try:
                results: list[ImageOutcome | BaseException] = list(self.explain_group(first, images))
                if len(results) != len(images):
                    raise InternalError(f"the engine returned {len(results)} results for {len(images)} images")
            except Exception as exc:
                results = [_serving_error(exc)] * len(images)
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
                _set_reply_headers(context, item.index, "application/json", 200)
                return model_info_json(loaded.caps, model_name=loaded.model_name)
            start = time.perf_counter()
            if item.reply == "json":
                return self._encode_json(served, context, batch_size, start)
            return self._encode_proto(served, context, batch_size, start)
        except Exception as exc:
            return self._answer_error(item.index, None, context, _serving_error(exc), reply=item.reply)

    def _encode_proto(self, served: Served, context: Any, batch_size: int, start: float) -> bytes:
        item, loaded = served.item, self.loaded
        _set_reply_headers(context, item.index, PROTOBUF_CONTENT_TYPES[0], None)
        if item.parsed is None:
            error = item.error or InternalError("the request was not parsed")
            return self._error_proto(error, item.request_id)
        if item.parsed.describe:
            response = explain_pb2.ExplainResponse(
                model_name=loaded.model_name, model_version=loaded.model_version, request_id=item.request_id
            )
            response.model_info.CopyFrom(model_info(loaded.caps))
            response.versions.update(loaded.versions)
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
                loaded.caps,
                model_name=loaded.model_name,
                model_version=loaded.model_version,
                timing=timing,
                encode_start=start,
            )
            if len(body) > loaded.caps.limits.max_response_bytes:
                status, body = error_json(_too_large(len(body), loaded.caps.limits.max_response_bytes))
        _set_reply_headers(context, item.index, "application/json", status)
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
        if kind == "proto":
            _set_reply_headers(context, index, PROTOBUF_CONTENT_TYPES[0], None)
            return self._error_proto(error, "")
        status, body = error_json(error)
        _set_reply_headers(context, index, "application/json", status)
        return body


# --------------------------------------------------------------------------------------------------- routing
def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _too_large(size: int, limit: int) -> CamserveError:
    return ResourceExhaustedError(
        f"the response is {size} bytes, over the server's limit of {limit}; request less or use UINT8/PNG",
        field="output",
    )


def _header(context: Any, index: int, key: str) -> Any:
    """A request header or per-parameter header dict of item ``index``; ``None`` when absent or not provided."""
    getter = getattr(context, "get_request_header", None)
    if getter is None:
        return None
    try:
        return getter(index, key)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _content_type(context: Any, index: int, key: str) -> str:
    """The content type of parameter ``key`` of item ``index`` (TorchServe keeps it per parameter)."""
    value = _header(context, index, key)
    if isinstance(value, Mapping):
        for name, content_type in value.items():
            if str(name).lower() == "content-type" and content_type:
                return str(content_type).split(";")[0].strip().lower()
    getter = getattr(context, "get_all_request_header", None)
    if getter is not None:
        try:
            headers = getter(index) or {}
        except (AttributeError, IndexError, KeyError, TypeError):
            headers = {}
        for name, content_type in headers.items():
            if str(name).lower() == "content-type" and isinstance(content_type, str):
                return content_type.split(";")[0].strip().lower()
    return ""


def reply_kind(index: int, row: Any, context: Any) -> ReplyKind:
    """How item ``index`` is answered (never raises): see the module docstring for the rules."""
    if str(_header(context, index, "describe")) == "True":
        return "describe"
    if not isinstance(row, Mapping) or REQUEST_KEY in row:
        return "proto"
    for key in BODY_KEYS:
        if key in row:
            return "proto" if _content_type(context, index, key) in PROTOBUF_CONTENT_TYPES else "json"
    return "json"


def check_deadline(row: Any, now: float | None = None) -> None:
    """Raises DeadlineExceededError when the item carries a deadline (:data:`DEADLINE_KEY`) that has passed.

    Its caller has gone (the gateway drops the answer), so the item is not decoded or computed: expired jobs cost
    the worker microseconds instead of a full explanation.
    """
    if not isinstance(row, Mapping) or DEADLINE_KEY not in row:
        return
    text = _as_text(row[DEADLINE_KEY], DEADLINE_KEY)
    try:
        deadline_ms = float(text)
    except ValueError as exc:
        message = f"{DEADLINE_KEY} must be a Unix time in ms, got {text[:40]!r}"
        raise InvalidArgumentError(message, field=DEADLINE_KEY) from exc
    late_ms = (time.time() if now is None else now) * 1000.0 - deadline_ms
    if late_ms > 0:
        raise DeadlineExceededError(
            f"the caller's deadline passed {late_ms:.0f} ms before the request left the queue; it was not computed"
        )


def _as_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")  # TorchServe decodes text/* bodies; this restores the bytes
    raise InvalidArgumentError(
        f"{name} must be binary; got {type(value).__name__} (JSON bodies are not accepted: send a raw image or "
        "an ExplainRequest as application/x-protobuf)",
        field=name,
    )


def _as_text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError(f"parameter {name} is not UTF-8 text", field=name) from exc
    raise InvalidArgumentError(f"parameter {name} must be text, got {type(value).__name__}", field=name)


def request_message(row: Any, reply: ReplyKind) -> explain_pb2.ExplainRequest:
    """The ``ExplainRequest`` carried by one batch item (built from the image and form fields for REST raw images).

    Raises:
        InvalidArgumentError: Malformed protobuf bytes, a JSON body, or no usable input at all.
    """
    if not isinstance(row, Mapping):
        raise InvalidArgumentError(f"unexpected input of type {type(row).__name__}", field="request")
    body_key = next((k for k in BODY_KEYS if k in row), None)
    if REQUEST_KEY in row or (reply == "proto" and body_key is not None):
        key = REQUEST_KEY if REQUEST_KEY in row else str(body_key)
        return decode_request(_as_bytes(row[key], key))
    if body_key is None:
        raise InvalidArgumentError(
            "no image in the request: send the image as the whole request body with a binary content type "
            "(curl -T image.png URL, or curl -H 'Content-Type: application/octet-stream' --data-binary @image.png "
            "URL), or an ExplainRequest as 'request'",
            field="body",
        )
    body = _as_bytes(row[body_key], body_key)
    params = {str(k): _as_text(v, str(k)) for k, v in row.items() if k not in (body_key, DEADLINE_KEY)}
    return request_from_rest(body, params)


def _set_reply_headers(context: Any, index: int, content_type: str, status: int | None) -> None:
    """Sets the answer's content type and (REST JSON only) HTTP status; gRPC ignores both."""
    processors = getattr(context, "request_processor", None)
    if not isinstance(processors, Sequence) or index >= len(processors) or processors[index] is None:
        return
    context.set_response_content_type(index, content_type)
    if status is not None and status != HTTPStatus.OK:
        context.set_response_status(status, HTTPStatus(status).phrase, idx=index)
