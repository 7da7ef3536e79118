"""Filters requests: ``FiltersRequest`` bytes in, ``FiltersResponse`` bytes out, for any batch item that asks.

Filters depend on the model's weights only, so they skip the image pipeline and the engine's batches: the item is
answered on its own (in band: a bad layer name, a deadline that passed or an answer over the response limit is an
``Error`` in the response, never an exception that would fail the batch). The response size is known exactly from
the kernels' shapes and is checked before anything is encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import torch
from camserve_proto.camserve.v1 import explain_pb2
from torch import nn

from handlers.engine import FilterView, conv_layers, filters
from handlers.engine.errors import InvalidArgumentError, ResourceExhaustedError
from handlers.serving._encode import error_message
from handlers.serving._parse import MAX_ID_LENGTH
from handlers.serving._routing import FILTERS_KEY, check_deadline, direct_message

__all__ = ["answer_filters", "filters_error"]

# Generous per-item protobuf overheads (tags, lengths, small numbers).
_FIXED: Final = 512
_PER_FILTER: Final = 128


def _tensor(t: torch.Tensor) -> explain_pb2.Tensor:
    values = t.detach().to("cpu", torch.float32).contiguous()
    return explain_pb2.Tensor(shape=list(values.shape), encoding=explain_pb2.FLOAT32, data=values.numpy().tobytes())


def _size(views: list[FilterView], names: tuple[str, ...]) -> int:
    """The encoded response's size, bounded from above by shapes alone."""
    total = _FIXED + sum(len(n.encode()) + 4 for n in names)
    for v in views:
        values = v.tiles.numel() + v.norms.numel() + v.connections.numel()
        total += _PER_FILTER + len(v.layer.encode()) + 4 * values
    return total


def _request(row: Mapping[str, Any]) -> explain_pb2.FiltersRequest:
    msg = direct_message(row, FILTERS_KEY, explain_pb2.FiltersRequest)
    if len(msg.request_id) > MAX_ID_LENGTH:
        raise InvalidArgumentError(f"request_id is longer than {MAX_ID_LENGTH} characters", field="request_id")
    return msg


def answer_filters(
    row: Mapping[str, Any], model: nn.Module, *, max_response_bytes: int, model_name: str, model_version: str
) -> bytes:
    """The ``FiltersResponse`` bytes for one batch item carrying ``{"filters": FiltersRequest bytes}``."""
    request_id = ""
    try:
        check_deadline(row)
        msg = _request(row)
        request_id = msg.request_id
        views = filters(model, list(msg.layers) or None, int(msg.max_channels) or None)
        names = conv_layers(model)
        size = _size(views, names)
        if size > max_response_bytes:
            raise ResourceExhaustedError(
                f"the filters of {[v.layer for v in views]} take {size} bytes, over the server's limit of "
                f"{max_response_bytes}; ask for fewer layers or set max_channels",
                field="max_channels",
            )
        response = explain_pb2.FiltersResponse(
            model_name=model_name, model_version=model_version, request_id=request_id, conv_layers=list(names)
        )
        for v in views:
            response.filters.add(
                layer=v.layer,
                in_channels=v.in_channels,
                out_channels=v.out_channels,
                groups=v.groups,
                kernel_height=v.kernel_size[0],
                kernel_width=v.kernel_size[1],
                rgb=v.rgb,
                tiles=_tensor(v.tiles),
                norms=_tensor(v.norms),
                connections=_tensor(v.connections),
            )
        return bytes(response.SerializeToString())
    except Exception as exc:  # every failure in band: typed errors as they are, anything else a generic INTERNAL
        return filters_error(exc, request_id=request_id, model_name=model_name, model_version=model_version)


def filters_error(exc: BaseException, *, request_id: str = "", model_name: str = "", model_version: str = "") -> bytes:
    """A ``FiltersResponse`` that rejects the request in band."""
    response = explain_pb2.FiltersResponse(model_name=model_name, model_version=model_version, request_id=request_id)
    response.error.CopyFrom(error_message(exc))
    return bytes(response.SerializeToString())
