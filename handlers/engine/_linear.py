"""Cheaper input gradients through layers that are linear in their input at explanation time.

An explanation's backward passes only need gradients with respect to activations and the input, never the
weights. For two common layers PyTorch's generic backward does more than that needs:

- an eval-mode batch norm with running statistics is a per-channel affine map, ``y = x * s + t`` with
  ``s = w / sqrt(var + eps)``, so ``dL/dx = dL/dy * s``: one multiply, where the generic batch-norm backward costs
  ~3x as much (measured: 8.1 ms vs 2.8 ms for ``[8, 256, 56, 56]``, one thread) and keeps the norm's input alive;
- a pointwise convolution (1x1 kernel, no padding, one group) is a matrix product over channels, so
  ``dL/dx = W^T . dL/dy`` (scattered back to every stride-th pixel when strided): one GEMM, where the generic
  convolution backward is ~1.4x slower at stride 1 (10.1 ms vs 14.5 ms for 256 -> 64 channels at 56x56) and ~4.5x
  slower at stride 2 (97 ms vs 21 ms for resnet50's first 256 -> 512 downsample at batch 8). For a channels-last
  input the product runs over ``[N*h*w, C]`` rows so the gradient stays NHWC: an NCHW gradient would make every
  convolution backward after it convert layouts (resnet50's bundle at batch 8 was 2-9% slower in NHWC than NCHW without
  this, 9% faster with it).

While :func:`linear_shortcuts` is active, such a layer runs its own forward without recording a graph (so it also
saves nothing) and its output is re-attached to its input by :class:`_Reattach`, whose backward is the shortcut. The
numbers are the same up to float rounding. Layers with trainable parameters (someone wants their gradient), in
training mode, or of a subclass (which may override ``forward``) keep PyTorch's own backward.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = ["linear_shortcuts"]

#: An input-gradient rule: output gradient -> input gradient.
Backward = Callable[[Tensor], Tensor]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class _Reattach(torch.autograd.Function):
    """Attach an already computed output to the layer's input, with a given input-gradient rule."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, backward: Backward, box: list[Tensor]) -> Tensor:
        # The output comes in a list so that autograd does not see an input returned as-is (it would make the
        # result a view, and the in-place ReLU that usually follows is forbidden on such views).
        ctx.backward = backward
        ctx.x_dtype = x.dtype
        return box[0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        return ctx.backward(grad).to(ctx.x_dtype), None, None


def _batchnorm_rule(module: nn.Module, x: Tensor) -> Backward | None:
    """``dL/dx = dL/dy * w / sqrt(var + eps)`` for an eval-mode norm with running statistics."""
    bn = cast(nn.BatchNorm2d, module)  # any of _BATCHNORMS
    if bn.running_var is None:  # batch statistics even in eval mode: not affine
        return None
    scale = (bn.running_var.detach().float() + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.detach().float()
    scale = scale.view(1, -1, *([1] * (x.ndim - 2)))
    return lambda grad: grad * scale


#: Below this many output positions per image, one GEMM over the whole batch beats one GEMM per image (measured on
#: resnet50's 7x7 stage: 6.2 ms vs 10.1 ms; at 14x14 they tie, at 56x56 per image wins: 6.6 ms vs 9.9 ms).
_THIN = 196


def _pointwise_conv_rule(module: nn.Module, x: Tensor) -> Backward | None:
    """``dL/dx = W^T . dL/dy`` over channels for a 1x1, unpadded, single-group convolution (any stride)."""
    conv = cast(nn.Conv2d, module)
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding not in ((0, 0), "valid") or x.ndim != 4:
        return None
    stride_h, stride_w = conv.stride
    in_h, in_w = int(x.shape[2]), int(x.shape[3])
    weight_t = conv.weight.detach()[:, :, 0, 0].t()  # [C_in, C_out]
    nhwc = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()

    def backward(grad: Tensor) -> Tensor:
        # reshape/transpose, not flatten/view: the batched top-k backward runs this under vmap, which has no rule
        # for those.
        n, c_out, h, w = grad.shape
        wt = weight_t.to(grad.dtype)
        if nhwc:  # channels-last model: [N, h, w, C_out] @ [C_out, C_in], one GEMM, the gradient stays NHWC
            g_in = torch.matmul(grad.permute(0, 2, 3, 1), wt.t()).permute(0, 3, 1, 2)
            if (stride_h, stride_w) == (1, 1):
                return g_in
            out = g_in.new_zeros(n, in_h, in_w, g_in.shape[1]).permute(0, 3, 1, 2)
            out[:, :, ::stride_h, ::stride_w] = g_in
            return out
        if h * w >= _THIN:  # [C_in, C_out] @ [N, C_out, h*w], one GEMM per image
            g_in = torch.matmul(wt, grad.reshape(n, c_out, h * w)).reshape(n, -1, h, w)
        else:  # [C_in, C_out] @ [C_out, N*h*w], one GEMM for the batch
            g_in = torch.mm(wt, grad.transpose(0, 1).reshape(c_out, n * h * w))
            g_in = g_in.reshape(-1, n, h, w).transpose(0, 1).contiguous()
        if (stride_h, stride_w) == (1, 1):
            return g_in
        # A strided 1x1 convolution reads every stride-th pixel; the others get no gradient.
        out = g_in.new_zeros(n, g_in.shape[1], in_h, in_w)
        out[:, :, ::stride_h, ::stride_w] = g_in
        return out

    return backward


_RULES: dict[type[nn.Module], Callable[[nn.Module, Tensor], Backward | None]] = {
    **dict.fromkeys(_BATCHNORMS, _batchnorm_rule),
    nn.Conv2d: _pointwise_conv_rule,
}


@contextmanager
def linear_shortcuts(model: nn.Module) -> Iterator[int]:
    """During the block, eval-mode batch norms and pointwise convolutions backpropagate by their shortcut rule.

    Applies to calls whose input requires grad while grad mode is on; other calls run unchanged. The hooks go first
    on each module (``prepend``), so a layer that :func:`~handlers.engine._hooks.capture_outputs` also records is
    recorded with the re-attached graph. All hooks are removed on exit.

    Yields:
        The number of hooked modules (each call still decides whether its shortcut applies).
    """
    # The rule of each running call, per module (a module whose forward raised inside a caller's try/except leaves
    # a stale entry below the next call's, never above it).
    pending: dict[int, list[Backward | None]] = {}

    def pre(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        rule = None
        if (
            isinstance(x, Tensor)
            and x.requires_grad
            and torch.is_grad_enabled()
            and not module.training
            and not any(p.requires_grad for p in module.parameters(recurse=False))
        ):
            rule = _RULES[type(module)](module, x)
        pending.setdefault(id(module), []).append(rule)
        if rule is not None:
            torch.set_grad_enabled(False)  # the caller's enable_grad() block restores it if the forward raises

    def post(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        rule = pending[id(module)].pop()
        if rule is None:
            return None
        torch.set_grad_enabled(True)
        return _Reattach.apply(args[0], rule, [output])

    handles: list[RemovableHandle] = []
    try:
        for module in model.modules():
            if type(module) in _RULES:
                handles.append(module.register_forward_pre_hook(pre, prepend=True))
                handles.append(module.register_forward_hook(post, prepend=True))
        yield len(handles) // 2
    finally:
        for h in handles:
            h.remove()
