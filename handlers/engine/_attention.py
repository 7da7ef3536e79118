"""Attention weights of vision transformers built from ``nn.MultiheadAttention``, recorded on the gradient path.

torchvision's ``EncoderBlock`` calls ``self_attention(x, x, x, need_weights=False)``, so the weights are never
returned; and when they are (``need_weights=True``), the returned tensor is a view taken *after* the weights were
used, off the path from the input to the logits, so no gradient ever reaches it. Hence :func:`capture_attention`
puts a forward hook on each ``nn.MultiheadAttention`` that recomputes its attention from the module's own input and
projection weights (``softmax(q k^T / sqrt(d))`` per head, ``W v``, ``out_proj``), records the weights ``[B, heads,
N, N]``, and hands the *recomputed* output to the rest of the forward. The recorded weights are then on the path to
the logits: d score / d weights is the real gradient (what gradient-weighted attention needs), and the output equals
the module's own up to float rounding (the tests compare logits). The module's own forward still runs first (its
output is replaced), so every attention layer runs twice: about the cost of one more attention per block.

Supported: self-attention (query, key and value the same tensor), a packed in-projection, no masks, no ``bias_k``/
``bias_v``, no ``add_zero_attn``; the engine runs the model in eval mode, so there is no attention dropout. Anything
else raises ``InvalidArgumentError`` naming the module.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from handlers.engine._grid import MAX_PREFIX_TOKENS, GridLayout, detect_layout
from handlers.engine.errors import InvalidArgumentError

__all__ = ["attention_modules", "capture_attention", "token_grid"]

_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def attention_modules(model: nn.Module) -> dict[str, nn.MultiheadAttention]:
    """The model's ``nn.MultiheadAttention`` modules by dotted name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)}


def _self_attention_input(
    name: str, module: nn.MultiheadAttention, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Tensor, bool, bool]:
    """The call's ``(x, need_weights, average_attn_weights)``; raises for calls the recomputation does not cover."""
    bound = _SIGNATURE.bind(module, *args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query = a["query"]
    why = None
    if a["key"] is not query or a["value"] is not query:
        why = "query, key and value are not the same tensor (not self-attention)"
    elif a["key_padding_mask"] is not None or a["attn_mask"] is not None or a["is_causal"]:
        why = "it is called with a mask"
    elif not module._qkv_same_embed_dim or module.in_proj_weight is None:
        why = "its query, key and value projections are separate"
    elif module.bias_k is not None or module.bias_v is not None or module.add_zero_attn:
        why = "it has bias_k/bias_v or add_zero_attn"
    elif not isinstance(query, Tensor) or query.ndim != 3:
        why = "its input is not a batched [B, N, E] tensor"
    if why is not None:
        raise InvalidArgumentError(f"attention methods cannot read attention layer {name!r}: {why}", field="methods")
    x = query if module.batch_first else query.transpose(0, 1)
    return x, bool(a["need_weights"]), bool(a["average_attn_weights"])


def _recompute(module: nn.MultiheadAttention, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(output [B, N, E], weights [B, heads, N, N])`` of self-attention on batch-first ``x``."""
    b, n, e = x.shape
    heads, d = module.num_heads, module.head_dim
    qkv = F.linear(x, module.in_proj_weight, module.in_proj_bias).reshape(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = torch.softmax((q * d**-0.5) @ k.transpose(-2, -1), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, e)
    return F.linear(out, module.out_proj.weight, module.out_proj.bias), weights


@contextmanager
def capture_attention(modules: Mapping[str, nn.MultiheadAttention]) -> Iterator[dict[str, Tensor]]:
    """Record every named attention module's weights ``[B, heads, N, N]`` during the forward passes in the block.

    The dict is in the order the modules ran (a module called twice is recorded at its last call). With autograd on,
    an attention whose input has no history (nothing upstream needs a gradient) starts the graph at a fresh leaf.
    """
    captured: dict[str, Tensor] = {}
    name_of = {id(m): name for name, m in modules.items()}

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _output: Any) -> Any:
        assert isinstance(module, nn.MultiheadAttention)
        name = name_of[id(module)]
        x, need_weights, average = _self_attention_input(name, module, args, kwargs)
        if torch.is_grad_enabled() and not x.requires_grad and x.is_floating_point():
            x = x.detach().requires_grad_()
        out, weights = _recompute(module, x)
        captured.pop(name, None)
        captured[name] = weights
        out = out if module.batch_first else out.transpose(0, 1)
        return out, (weights.mean(dim=1) if average else weights) if need_weights else None

    handles: list[RemovableHandle] = []
    try:
        for module in {id(m): m for m in modules.values()}.values():
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
        yield captured
    finally:
        for h in handles:
            h.remove()


def token_grid(
    attention: Mapping[str, Tensor], input_hw: tuple[int, int], patch: tuple[int, int] | None
) -> GridLayout | None:
    """How the tokens of the recorded attention read as leading tokens + a patch grid (``None`` if none recorded).

    Raises:
        InvalidArgumentError: They do not (e.g. the tokens were pooled or merged before the attention).
    """
    if not attention:
        return None
    n_tokens = int(next(iter(attention.values())).shape[-1])
    layout = detect_layout((n_tokens, 1), input_hw, patch)
    if layout is None or layout.kind != "tokens":
        size = f"{patch[0]}x{patch[1]} patches" if patch is not None else "patches"
        raise InvalidArgumentError(
            f"the attention layers see {n_tokens} tokens, which are not a grid of {size} of input {input_hw} after "
            f"at most {MAX_PREFIX_TOKENS} class/register tokens",
            field="methods",
        )
    return layout
