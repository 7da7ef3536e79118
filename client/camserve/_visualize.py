"""Activation maximisation (``client.visualize``): the request, its validation and the decoded answer.

The server bounds each request (steps and wall time); ``Client.visualize_rounds`` chains requests, each starting
from the previous image, and yields every round, which is how a longer optimisation shows its progress.
Protobuf stays at this edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2

from camserve._decode import decode_tensor, parse_reply
from camserve._maps import frozen
from camserve._options import check_keys
from camserve._results import Prediction
from camserve.errors import Internal, InvalidArgument

__all__ = ["Visualization", "VisualizeArgs", "decode_visualize", "visualize_request"]


@dataclass(frozen=True, eq=False)
class Visualization:
    """An input optimised to excite a class or a channel.

    Attributes:
        image: ``H x W x 3`` float32 pixels in [0, 1] (read-only).
        scores: The objective before the first step and after every kept step (never decreasing).
        steps: Steps taken.
        stopped: ``"steps"`` (the budget was used up) or ``"deadline"``.
        elapsed_ms: Server time spent.
        predictions: The model's top predictions for the image.
        model_name: The model that answered.
    """

    image: np.ndarray
    scores: tuple[float, ...]
    steps: int
    stopped: str
    elapsed_ms: float
    predictions: tuple[Prediction, ...]
    model_name: str = ""


def _count(value: object, field: str, *, zero: bool) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise InvalidArgument(f"{field} must be an integer >= {0 if zero else 1}, got {value!r}", field=field)
    return value


def _real(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise InvalidArgument(f"{field} must be a finite number, got {value!r}", field=field)
    return float(value)


class VisualizeArgs(TypedDict, total=False):
    """The objective and optimiser options of ``visualize``, declared once for both clients (unset: the server's).

    ``target`` (a class id or label) or ``layer`` and ``channel``; ``steps``, ``lr``, ``l2`` (decay), ``jitter``
    (pixels), ``blur_every`` / ``blur_sigma``, ``seed`` (default 0), ``deadline_ms``, and ``init`` (an ``H x W x 3``
    image to continue from, e.g. a previous ``.image``).
    """

    target: int | str | None
    layer: str | None
    channel: int | None
    steps: int | None
    lr: float | None
    l2: float | None
    jitter: int | None
    blur_every: int | None
    blur_sigma: float | None
    seed: int
    deadline_ms: int | None
    init: np.ndarray | None


def visualize_request(
    model: str, version: str, request_id: str, options: VisualizeArgs
) -> inference_pb2.PredictionsRequest:
    """The Predictions call of ``client.visualize``.

    Raises:
        TypeError: A keyword ``visualize`` does not take.
        InvalidArgument: A bad option, named in ``field``.
    """
    check_keys("visualize", options, VisualizeArgs)
    target, layer, init = options.get("target"), options.get("layer"), options.get("init")
    msg = explain_pb2.VisualizeRequest(request_id=request_id, seed=_count(options.get("seed", 0), "seed", zero=True))
    if (target is None) == (layer is None):
        raise InvalidArgument("give either target (a class id or label) or layer= and channel=", field="target")
    if isinstance(target, str) and target:
        msg.class_name = target
    elif target is not None:
        msg.class_id = _count(target, "target", zero=True)
    else:
        if not isinstance(layer, str) or not layer:
            raise InvalidArgument(f"layer must be a layer name, got {layer!r}", field="layer")
        channel = _count(options.get("channel"), "channel", zero=True)
        msg.channel.CopyFrom(explain_pb2.LayerChannel(layer=layer, channel=channel))
    if (steps := options.get("steps")) is not None:
        msg.steps = _count(steps, "steps", zero=False)
    if (lr := options.get("lr")) is not None:
        msg.learning_rate = _real(lr, "lr")
    if (l2 := options.get("l2")) is not None:
        msg.l2_decay = _real(l2, "l2")
    if (jitter := options.get("jitter")) is not None:
        msg.jitter = _count(jitter, "jitter", zero=True)
    if (blur_every := options.get("blur_every")) is not None:
        msg.blur_every = _count(blur_every, "blur_every", zero=True)
    if (blur_sigma := options.get("blur_sigma")) is not None:
        msg.blur_sigma = _real(blur_sigma, "blur_sigma")
    if (deadline_ms := options.get("deadline_ms")) is not None:
        msg.deadline_ms = _count(deadline_ms, "deadline_ms", zero=False)
    if init is not None:
        a = np.asarray(init, dtype=np.float32)
        if a.ndim != 3 or a.shape[2] != 3:
            raise InvalidArgument(f"init must be an H x W x 3 image, got shape {a.shape}", field="init")
        chw = np.ascontiguousarray(a.transpose(2, 0, 1))
        msg.init.CopyFrom(explain_pb2.Tensor(shape=list(chw.shape), encoding=explain_pb2.FLOAT32, data=chw.tobytes()))
    return inference_pb2.PredictionsRequest(
        model_name=model, model_version=version, input={"visualize": msg.SerializeToString()}
    )


def decode_visualize(response: inference_pb2.PredictionResponse) -> Visualization:
    """Decodes a ``VisualizeResponse``.

    Raises:
        CamserveError: The server rejected the request (the matching subclass), or the answer is malformed.
    """
    message = parse_reply(response.prediction, explain_pb2.VisualizeResponse)
    image = decode_tensor(message.image, "image")
    if image.ndim != 3 or image.shape[0] != 3 or not message.scores:
        raise Internal(f"malformed response: image {list(image.shape)}, {len(message.scores)} scores")
    return Visualization(
        image=frozen(np.ascontiguousarray(image.transpose(1, 2, 0))),
        scores=tuple(float(s) for s in message.scores),
        steps=int(message.steps),
        stopped=message.stopped,
        elapsed_ms=float(message.elapsed_ms),
        predictions=tuple(
            Prediction(class_id=int(p.class_id), label=p.label, score=float(p.score), logit=float(p.logit))
            for p in message.predictions
        ),
        model_name=message.model_name,
    )
