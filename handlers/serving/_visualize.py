"""Activation-maximisation requests: ``VisualizeRequest`` bytes in, ``VisualizeResponse`` bytes out, per batch item.

Long-running work must not block ordinary requests. A TorchServe worker runs one batch at a time, so every request
is bounded before it starts: at most ``limits.max_visualize_steps`` steps and ``limits.max_visualize_ms`` of wall
time (2 s by default; never past the caller's own deadline), or it is refused with RESOURCE_EXHAUSTED. An item
therefore delays the other items of its batch by at most that budget. Progress over a longer optimisation comes from
chaining bounded requests (each sends the previous image as ``init``; the SDK's ``visualize_rounds`` does this and
yields every round), not from one request that holds the worker; a deployment that wants bigger budgets serves the
same weights as a second model with its own workers and limits. Images travel as RGB pixels in [0, 1]: the model's
normalisation is applied to ``init`` and undone for the answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from camserve_proto.camserve.v1 import explain_pb2
from torch import nn

from handlers.engine import VisualizeSpec, visualize
from handlers.engine.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from handlers.serving._config import ServingConfig
from handlers.serving._encode import error_message
from handlers.serving._parse import MAX_ID_LENGTH
from handlers.serving._routing import DEADLINE_KEY, VISUALIZE_KEY, check_deadline, direct_message
from handlers.serving._types import Capabilities

__all__ = ["answer_visualize"]

_DEFAULT_STEPS = 100


def _caller_seconds_left(row: Mapping[str, Any]) -> float | None:
    if DEADLINE_KEY not in row:
        return None
    raw = row[DEADLINE_KEY]
    text = raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
    return float(text) / 1000.0 - time.time()


def _spec(msg: explain_pb2.VisualizeRequest, caps: Capabilities, seconds: float) -> VisualizeSpec:
    limits = caps.limits
    if msg.steps > limits.max_visualize_steps:
        raise ResourceExhaustedError(
            f"steps is {msg.steps}; the limit is {limits.max_visualize_steps} (continue a run with init)",
            field="steps",
        )
    if msg.deadline_ms > limits.max_visualize_ms:
        raise ResourceExhaustedError(
            f"deadline_ms is {msg.deadline_ms}; the limit is {limits.max_visualize_ms}", field="deadline_ms"
        )
    which = msg.WhichOneof("objective")
    target: int | None = None
    layer: str | None = None
    channel: int | None = None
    if which == "class_id":
        if not 0 <= msg.class_id < caps.num_classes:
            raise InvalidArgumentError(f"class id {msg.class_id} is outside [0, {caps.num_classes})", field="class_id")
        target = int(msg.class_id)
    elif which == "class_name":
        if msg.class_name not in caps.label_ids:
            raise NotFoundError(f"no class is labelled {msg.class_name!r}", field="class_name")
        target = caps.label_ids[msg.class_name]
    elif which == "channel":
        if msg.channel.layer not in caps.layer_grids:
            raise NotFoundError(f"layer {msg.channel.layer!r} is not an explainable layer", field="channel.layer")
        layer, channel = msg.channel.layer, int(msg.channel.channel)
    else:
        raise InvalidArgumentError("set class_id, class_name or channel", field="objective")
    defaults = VisualizeSpec(target=0)
    with _wire_fields():
        return VisualizeSpec(
            target=target,
            layer=layer,
            channel=channel,
            steps=int(msg.steps) or _DEFAULT_STEPS,
            lr=float(msg.learning_rate) or defaults.lr,
            l2=float(msg.l2_decay) if msg.HasField("l2_decay") else defaults.l2,
            jitter=int(msg.jitter) if msg.HasField("jitter") else defaults.jitter,
            blur_every=int(msg.blur_every) if msg.HasField("blur_every") else defaults.blur_every,
            blur_sigma=float(msg.blur_sigma) or defaults.blur_sigma,
            seed=int(msg.seed),
            deadline=seconds,
        )


@contextmanager
def _wire_fields() -> Iterator[None]:
    """The engine's argument names in errors -> the request's field names."""
    try:
        yield
    except InvalidArgumentError as exc:
        wire = {"lr": "learning_rate", "l2": "l2_decay", "channel": "channel.channel", "layer": "channel.layer"}
        raise InvalidArgumentError(exc.message, field=wire.get(exc.field, exc.field)) from None


def _init(msg: explain_pb2.VisualizeRequest, config: ServingConfig) -> torch.Tensor | None:
    if not msg.HasField("init"):
        return None
    t = msg.init
    height, width = config.input_size
    if t.encoding != explain_pb2.FLOAT32 or list(t.shape) != [3, height, width] or len(t.data) != 12 * height * width:
        raise InvalidArgumentError(f"init must be FLOAT32 pixels [3, {height}, {width}]", field="init")
    pixels = torch.from_numpy(np.frombuffer(t.data, dtype="<f4").reshape(3, height, width).copy())
    if not bool(torch.isfinite(pixels).all()) or float(pixels.min()) < 0.0 or float(pixels.max()) > 1.0:
        raise InvalidArgumentError("init pixels must be finite and in [0, 1]", field="init")
    mean, std = torch.tensor(config.mean).view(3, 1, 1), torch.tensor(config.std).view(3, 1, 1)
    return (pixels - mean) / std


def answer_visualize(
    row: Mapping[str, Any],
    model: nn.Module,
    caps: Capabilities,
    config: ServingConfig,
    *,
    model_name: str,
    model_version: str,
) -> bytes:
    """The ``VisualizeResponse`` bytes for one batch item carrying ``{"visualize": VisualizeRequest bytes}``."""
    response = explain_pb2.VisualizeResponse(model_name=model_name, model_version=model_version)
    try:
        check_deadline(row)
        msg = direct_message(row, VISUALIZE_KEY, explain_pb2.VisualizeRequest)
        if len(msg.request_id) > MAX_ID_LENGTH:
            raise InvalidArgumentError(f"request_id is longer than {MAX_ID_LENGTH} characters", field="request_id")
        response.request_id = msg.request_id
        if caps.kind != "classifier":
            raise InvalidArgumentError("activation maximisation applies to classifiers", field="visualize")
        seconds = (msg.deadline_ms or caps.limits.max_visualize_ms) / 1000.0
        left = _caller_seconds_left(row)
        if left is not None:
            seconds = min(seconds, max(left - 0.05, 0.001))  # answer before the caller gives up
        spec = _spec(msg, caps, seconds)
        mean, std = torch.tensor(config.mean), torch.tensor(config.std)
        bounds = ((0.0 - mean) / std, (1.0 - mean) / std)
        init = _init(msg, config)
        with _wire_fields():
            result = visualize(model, spec, config.input_size, bounds=bounds, init=init)
        pixels = (result.image * std.view(3, 1, 1) + mean.view(3, 1, 1)).clamp(0.0, 1.0).contiguous()
        response.image.CopyFrom(
            explain_pb2.Tensor(shape=list(pixels.shape), encoding=explain_pb2.FLOAT32, data=pixels.numpy().tobytes())
        )
        response.scores.extend(result.scores)
        response.steps, response.stopped = result.steps, result.stopped
        response.elapsed_ms = result.elapsed * 1000.0
        probs = result.logits.softmax(dim=0)
        top = probs.topk(min(5, int(probs.numel())))
        for score, class_id in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            label = caps.labels[class_id] if caps.labels and class_id < len(caps.labels) else ""
            response.predictions.add(class_id=class_id, label=label, score=score, logit=float(result.logits[class_id]))
        return bytes(response.SerializeToString())
    except Exception as exc:  # every failure in band
        failed = explain_pb2.VisualizeResponse(
            model_name=model_name, model_version=model_version, request_id=response.request_id
        )
        failed.error.CopyFrom(error_message(exc))
        return bytes(failed.SerializeToString())
