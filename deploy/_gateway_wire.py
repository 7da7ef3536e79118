"""The gateway's wire-level checks: the envelope a ``Predictions`` call must have, the deadline entry it gets, and
the corrected status of a failed upstream call (pure functions of bytes and codes; :mod:`deploy.gateway` uses them).
"""

from __future__ import annotations

from typing import Final

import grpc
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2


class Refused(Exception):
    """The gateway answers this call itself with ``code`` and ``details``."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


#: Input keys a camserve handler reads: the ExplainRequest, or a raw image as TorchServe's own clients send it.
INPUT_KEYS: Final = ("request", "data", "body")


def check_envelope(request: bytes) -> str:
    """The model a ``PredictionsRequest`` is for, after the checks TorchServe answers with the wrong code."""
    try:
        message = inference_pb2.PredictionsRequest.FromString(request)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"not a PredictionsRequest: {exc}") from exc
    if not message.model_name:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "model_name is required")
    if not any(key in message.input for key in INPUT_KEYS):
        got = ", ".join(repr(k) for k in sorted(message.input)[:8]) or "none"
        raise Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"input has no 'request' entry (keys: {got}): send the camserve.v1.ExplainRequest bytes as "
            "input['request'] (or raw image bytes as input['data'])",
        )
    return str(message.model_name)


def upstream_status(code: grpc.StatusCode, details: str) -> tuple[grpc.StatusCode, str]:
    """TorchServe's status for a failed call, with the codes it gets wrong corrected.

    TorchServe answers the calls of a batch whose worker died with INTERNAL (or RESOURCE_EXHAUSTED), and a model
    with no worker up with INTERNAL: both are transient — TorchServe restarts the worker — and explanations are
    pure computations, safe to repeat, so they become UNAVAILABLE, which clients retry. An unknown model is
    INTERNAL "Model not found" there; here it is NOT_FOUND.
    """
    first = details.strip().splitlines()[0] if details.strip() else code.name
    if "Worker died" in details:
        return grpc.StatusCode.UNAVAILABLE, f"the worker computing this request died ({first}); it is restarting: retry"
    if "has no worker to serve inference request" in details:
        return grpc.StatusCode.UNAVAILABLE, f"{first.split('. Please')[0]}: its worker is restarting; retry"
    if code == grpc.StatusCode.INTERNAL and "Model not found" in details:
        return grpc.StatusCode.NOT_FOUND, first
    return code, details


def deadline_entry(key: str, deadline_ms: int) -> bytes:
    """One ``input`` map entry (``key`` -> the deadline as ASCII) as protobuf bytes, to append to a request.

    Concatenated protobuf messages merge, so appending these bytes adds the entry without parsing or re-serialising
    the request (whose images can be megabytes).
    """
    return inference_pb2.PredictionsRequest(input={key: str(deadline_ms).encode()}).SerializeToString()
