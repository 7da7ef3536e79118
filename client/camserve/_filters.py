"""A model's convolution kernels (``client.filters``): the request, its validation and the decoded answer.

Filters travel as their own message pair (``camserve.v1.FiltersRequest`` in ``input["filters"]`` of TorchServe's
Predictions call, ``FiltersResponse`` back), since they depend on the model only. Protobuf stays at this edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from camserve_proto.camserve.v1 import explain_pb2
from camserve_proto.org.pytorch.serve.grpc.inference import inference_pb2

from camserve._decode import decode_tensor, parse_reply
from camserve._maps import frozen
from camserve.errors import Internal, InvalidArgument

__all__ = ["Filter", "Filters", "decode_filters", "filters_request"]


@dataclass(frozen=True, eq=False)
class Filter:
    """The kernels of one convolution (float32, read-only arrays).

    Attributes:
        layer: The convolution's dotted name.
        in_channels: Input channels per group.
        out_channels: Output channels (all of them, however many are shown).
        groups: The convolution's groups.
        kernel_size: ``(height, width)``.
        rgb: Whether ``tiles`` are RGB pictures (kernels over 3 input channels, a first layer).
        tiles: ``rgb``: ``[N, 3, kh, kw]`` in [0, 1], 0.5 = zero weight, each kernel scaled by its own max |w|;
            else ``[N, kh, kw]``, each kernel's spatial profile ``||w[o, :, y, x]||``.
        norms: ``[N]``, ``||w[o]||``.
        connections: ``[N, in_channels]``, ``||w[o, i]||``.
    """

    layer: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_size: tuple[int, int]
    rgb: bool
    tiles: np.ndarray
    norms: np.ndarray
    connections: np.ndarray

    def tile_images(self) -> np.ndarray:
        """RGB kernels as ``[N, kh, kw, 3]`` uint8 pictures (first layers only).

        Raises:
            InvalidArgument: The layer's kernels are not RGB.
        """
        if not self.rgb:
            raise InvalidArgument(f"{self.layer}'s kernels have {self.in_channels} input channels, not RGB")
        pictures: np.ndarray = (np.clip(self.tiles, 0.0, 1.0).transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)
        return pictures


@dataclass(frozen=True)
class Filters:
    """The answer of ``client.filters``: the requested layers' kernels and every convolution's name.

    Attributes:
        model_name: The model that answered.
        model_version: Its version.
        filters: One :class:`Filter` per requested layer, in request order.
        conv_layers: Every ``Conv2d`` of the model, in module order (what ``layers=`` may name).
    """

    model_name: str
    model_version: str
    filters: tuple[Filter, ...]
    conv_layers: tuple[str, ...]


def filters_request(
    model: str, version: str, layers: object, max_channels: object, request_id: str
) -> inference_pb2.PredictionsRequest:
    """The Predictions call of ``client.filters``; raises InvalidArgument naming a bad argument."""
    names = [layers] if isinstance(layers, str) else list(layers) if isinstance(layers, Sequence) else layers
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)):
        raise InvalidArgument(f"layers must be a name or a list of names, got {layers!r}", field="layers")
    if names is not None and not names:
        raise InvalidArgument("layers is empty (None = the first convolution)", field="layers")
    message = explain_pb2.FiltersRequest(layers=names or [], request_id=request_id)
    if max_channels is not None:
        if isinstance(max_channels, bool) or not isinstance(max_channels, int) or max_channels < 1:
            raise InvalidArgument(
                f"max_channels must be a positive integer, got {max_channels!r}", field="max_channels"
            )
        message.max_channels = max_channels
    return inference_pb2.PredictionsRequest(
        model_name=model, model_version=version, input={"filters": message.SerializeToString()}
    )


def decode_filters(response: inference_pb2.PredictionResponse) -> Filters:
    """Decodes a ``FiltersResponse``.

    Raises:
        CamserveError: The server rejected the request (the matching subclass), or the answer is malformed.
    """
    message = parse_reply(response.prediction, explain_pb2.FiltersResponse)
    out = []
    for i, f in enumerate(message.filters):
        what = f"filters[{i}] ({f.layer})"
        tiles = decode_tensor(f.tiles, f"{what}.tiles")
        norms = decode_tensor(f.norms, f"{what}.norms")
        connections = decode_tensor(f.connections, f"{what}.connections")
        count = norms.shape[0]
        if tiles.shape[0] != count or connections.shape != (count, f.in_channels) or tiles.ndim != (4 if f.rgb else 3):
            raise Internal(f"malformed response: {what} has inconsistent shapes")
        out.append(
            Filter(
                layer=f.layer,
                in_channels=int(f.in_channels),
                out_channels=int(f.out_channels),
                groups=int(f.groups),
                kernel_size=(int(f.kernel_height), int(f.kernel_width)),
                rgb=bool(f.rgb),
                tiles=frozen(tiles),
                norms=frozen(norms),
                connections=frozen(connections),
            )
        )
    return Filters(message.model_name, message.model_version, tuple(out), tuple(message.conv_layers))
