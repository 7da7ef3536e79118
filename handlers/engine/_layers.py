"""Layer names: resolution with helpful errors, and the automatic choice (torchcam's ``locate_candidate_layer``).

The automatic layer is found by one probe forward + backward at the configured input size: among modules whose
output reads as a spatial grid (see ``_grid``), it is the last one (in order of completion) that is not a global or
adaptive pooling and whose gradient on the grid positions is not identically zero. The gradient test is what makes
vision transformers work: ViT's final ``encoder.ln`` (and the last block's output) only feed the class token, so
their patch-token gradients are zero and the choice moves to the last block's ``ln_1``, whose output still reaches
the class token through attention.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from handlers.engine._grid import detect_layout
from handlers.engine._hooks import capture_outputs, frozen_eval
from handlers.engine.errors import InvalidArgumentError, NotFoundError

__all__ = ["ProbeResult", "input_channels", "patch_size", "probe", "resolve_layers"]

_POOLING = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Map dotted layer names to modules, in the given order, without duplicates.

    Raises:
        NotFoundError: A name is not a submodule; the message lists close matches.
        InvalidArgumentError: Empty name (the whole model is not a layer).
    """
    modules = dict(model.named_modules())
    resolved: dict[str, nn.Module] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"layer names must be non-empty strings, got {name!r}", field="layers")
        if name not in modules:
            close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise NotFoundError(f"model has no layer {name!r}{hint}", field="layers")
        resolved[name] = modules[name]
    return resolved


def input_channels(model: nn.Module) -> int:
    """Input channels of the first convolution (3 when the model has none)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return int(m.in_channels)
    return 3


def patch_size(model: nn.Module) -> tuple[int, int] | None:
    """The patch size of a patch-embedding model (ViT, Swin, ...), else ``None``.

    That is the kernel of the model's first 2-D convolution when it cuts the input into non-overlapping patches:
    kernel == stride > 1, no padding, no dilation (torchvision ``VisionTransformer.conv_proj``, Swin's first
    ``features`` conv). A CNN's strided stem overlaps or pads, so it has none.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kernel, stride, padding = tuple(m.kernel_size), tuple(m.stride), m.padding
            no_pad = padding == "valid" or (not isinstance(padding, str) and all(p == 0 for p in padding))
            if kernel == stride and min(kernel) > 1 and no_pad and tuple(m.dilation) == (1, 1):
                return (int(kernel[0]), int(kernel[1]))
            return None
    return None


@dataclass(frozen=True)
class ProbeResult:
    """What one probe pass learned about a model.

    Attributes:
        candidates: Layers whose output is a spatial grid, in forward (completion) order.
        grids: ``(h, w)`` of each candidate's grid at the probed input size.
        automatic: The automatically chosen layer.
        head: Name of the final ``nn.Linear`` producing the logits, if any.
        gap_linear_layers: Candidates whose global average is exactly ``head``'s input (GAP + linear models).
    """

    candidates: tuple[str, ...]
    grids: Mapping[str, tuple[int, int]]
    automatic: str
    head: str | None
    gap_linear_layers: frozenset[str]


def _is_gap_of(grid: Tensor, features: Tensor) -> bool:
    """Whether the head's input is exactly the global average of this grid (then CAM = head weights . grid)."""
    if features.ndim != 2 or grid.shape[:2] != features.shape:
        return False
    pooled = grid.mean(dim=(2, 3))
    scale = 1.0 + float(features.abs().max())
    return bool(torch.allclose(pooled, features, rtol=1e-4, atol=1e-5 * scale))


def probe(model: nn.Module, input_size: tuple[int, int]) -> ProbeResult:
    """Run one forward + backward on a random input to list candidate layers and choose one automatically.

    The model is left exactly as found (mode, parameters, hooks); the global RNG is not touched.

    Raises:
        InvalidArgumentError: The model has no layer with a spatial output at this input size.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    patch = patch_size(model)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, input_channels(model), *input_size, generator=generator).to(device)
    names = {name: m for name, m in model.named_modules() if name}
    order: list[str] = []
    linears = {id(m): name for name, m in names.items() if isinstance(m, nn.Linear)}
    last_linear: list[tuple[str, Tensor, Tensor | None]] = []

    def note(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        name = linears.get(id(module))
        if name is not None and isinstance(output, Tensor):
            features = args[0] if args and isinstance(args[0], Tensor) else None
            last_linear.append((name, output, features))

    with frozen_eval(model), torch.inference_mode(False), torch.enable_grad():
        x.requires_grad_(True)
        handles = [m.register_forward_hook(note) for m in names.values() if id(m) in linears]
        try:
            with capture_outputs(names, as_leaf=False, strict=False) as captured:
                # Completion order: a dict keeps first insertion, so re-insert on every call to get the last one.
                order_hooks = [
                    m.register_forward_hook(lambda _m, _a, _o, n=n: order.append(n)) for n, m in names.items()
                ]
                try:
                    out = model(x)
                finally:
                    for h in order_hooks:
                        h.remove()
        finally:
            for h in handles:
                h.remove()
        if not isinstance(out, Tensor):
            raise InvalidArgumentError(f"model returned {type(out).__name__}; the explainer needs a tensor")
        last_seen = {n: i for i, n in enumerate(order)}
        ordered = sorted(last_seen, key=last_seen.__getitem__)
        grids: dict[str, Tensor] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for name in ordered:
            t = captured.get(name)
            if t is None or not t.is_floating_point():
                continue
            layout = detect_layout(tuple(t.shape[1:]), input_size, patch)
            if layout is not None and layout.height * layout.width > 1:
                grids[name] = t
                sizes[name] = (layout.height, layout.width)
        if not grids:
            raise InvalidArgumentError(f"no layer keeps a spatial grid at input size {input_size}")
        # A random projection of the output; plus one of the head's input, so that a zero-initialised head
        # (torchvision's ViT with weights=None) still reveals which layers reach the features it reads.
        score = (out * torch.randn(out.shape, generator=generator).to(out)).sum()
        if last_linear and last_linear[-1][2] is not None and last_linear[-1][2].requires_grad:
            features = last_linear[-1][2]
            score = score + (features * torch.randn(features.shape, generator=generator).to(features)).sum()
        differentiable = [n for n, t in grids.items() if t.requires_grad]
        grads = torch.autograd.grad(score, [grids[n] for n in differentiable], allow_unused=True)
        alive: set[str] = set()
        for name, g in zip(differentiable, grads, strict=True):
            layout = detect_layout(tuple(g.shape[1:]), input_size, patch) if g is not None else None
            if g is not None and layout is not None and bool(layout.to_grid(g).abs().amax() > 0):
                alive.add(name)
        automatic = next((n for n in reversed(list(grids)) if n in alive and not isinstance(names[n], _POOLING)), None)
        if automatic is None:
            raise InvalidArgumentError("no spatial layer receives a gradient from the model output")

        head: str | None = None
        gap: set[str] = set()
        if last_linear and last_linear[-1][1].shape == out.shape and torch.equal(last_linear[-1][1], out):
            head = last_linear[-1][0]
            head_input = last_linear[-1][2]
            if isinstance(names[head], nn.Linear) and head_input is not None:
                with torch.no_grad():
                    for name, t in grids.items():
                        layout = detect_layout(tuple(t.shape[1:]), input_size, patch)
                        if layout is not None and _is_gap_of(layout.to_grid(t), head_input):
                            gap.add(name)
    return ProbeResult(tuple(grids), sizes, automatic, head, frozenset(gap))
