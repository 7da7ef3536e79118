"""The time budget: a request's work in model passes, from the methods' declared costs, checked before it starts.

Every method declares what it costs per image beyond the prediction's forward (:class:`~handlers.engine.Cost`:
forward inputs and backward passes per target, scaling with ``steps``, ``samples`` or a layer's ``channels``). A
request's total over its images, methods, layers and targets must stay within ``limits.max_passes``, and Score-CAM's
layers within ``limits.max_channels``; otherwise it is refused with ``RESOURCE_EXHAUSTED`` before the engine runs.
"""

from __future__ import annotations

from handlers.engine.errors import ResourceExhaustedError
from handlers.serving._types import Capabilities, ImageInput, ParsedRequest

__all__ = ["check_work_budget", "request_passes"]


def _targets(image: ImageInput, caps: Capabilities) -> int:
    return len(image.regions) if caps.kind == "vae" else image.target.count


def request_passes(parsed: ParsedRequest, caps: Capabilities) -> int:
    """Forward inputs plus backward passes the request's methods declare, over all its valid images."""
    total = 0
    units = parsed.options.units()
    for method in parsed.methods:
        cost = caps.method_costs.get(method)
        if cost is None:
            continue
        layers = parsed.layers if method in caps.layer_methods else ("",)
        for layer in layers:
            values = {**units, "channels": caps.layer_channels.get(layer, 0)}
            total += sum(cost.passes(values, _targets(image, caps)) for image in parsed.valid_images)
    return total


def check_work_budget(parsed: ParsedRequest, caps: Capabilities) -> None:
    """Refuses a request whose declared work exceeds the model's bounds.

    Raises:
        ResourceExhaustedError: A channel-scaled method on a layer over ``limits.max_channels`` (field
            ``layers[i]``), or more than ``limits.max_passes`` passes in all (field ``options``).
    """
    limits = caps.limits
    for method in parsed.methods:
        cost = caps.method_costs.get(method)
        if cost is None or "channels" not in cost.per:
            continue
        for i, layer in enumerate(parsed.layers):
            channels = caps.layer_channels.get(layer, 0)
            if channels > limits.max_channels:
                raise ResourceExhaustedError(
                    f"{method} runs one forward per channel; layer {layer!r} has {channels}, over this model's bound "
                    f"of {limits.max_channels} (limits.max_channels): pick a layer with fewer channels",
                    field=f"layers[{i}]",
                )
    passes = request_passes(parsed, caps)
    if passes > limits.max_passes:
        raise ResourceExhaustedError(
            f"the request would cost {passes} model passes, over this model's budget of {limits.max_passes} "
            "(limits.max_passes); request fewer images, targets, layers or options.steps / options.samples",
            field="options",
        )
