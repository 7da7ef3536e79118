"""Model facts at load: the pieces of :class:`~handlers.serving._types.Capabilities` that both handlers measure alike.

Layer grids come from the engine's own probe (``Explainer.layer_grids`` / ``VAEExplainer.layer_grids``), never from a
second forward pass here; the shape rule of every method comes from one dry run of the engine on zeros; the default
methods are checked against what the model can run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from handlers.engine import MapKey
from handlers.engine.errors import InvalidArgumentError
from handlers.serving._types import MethodShape

__all__ = ["default_methods", "layer_grids", "measure_method_shapes"]


def default_methods(configured: Sequence[str], methods: Sequence[str], fallback: Sequence[str]) -> tuple[str, ...]:
    """The methods used when a request names none: the configured ones, else those of ``fallback`` the model runs.

    Raises:
        InvalidArgumentError: A configured default method is not applicable to this model.
    """
    unknown = [m for m in configured if m not in methods]
    if unknown:
        raise InvalidArgumentError(
            f"model config camserve.default_methods has {unknown}, not applicable here; available: {tuple(methods)}",
            field="camserve.default_methods",
        )
    return tuple(configured) or (tuple(m for m in fallback if m in methods) or tuple(methods[:1]))


def layer_grids(
    grids: Mapping[str, tuple[int, int]], layers: Sequence[str], input_size: tuple[int, int]
) -> dict[str, tuple[int, int]]:
    """The grid ``(h, w)`` of every layer a request may name, from the engine's probe of the candidate layers.

    Raises:
        InvalidArgumentError: A (configured default) layer has no spatial grid at ``input_size``.
    """
    out: dict[str, tuple[int, int]] = {}
    for name in dict.fromkeys(layers):
        if name not in grids:
            raise InvalidArgumentError(
                f"layer {name!r} has no spatial grid at {input_size}; candidate layers: {list(grids)[-8:]}",
                field="camserve.default_layers",
            )
        out[name] = grids[name]
    return out


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
