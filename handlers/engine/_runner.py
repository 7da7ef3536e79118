"""The gradient runner both explainers are built on: checks, the batch scope, backward passes, the out-of-memory split.

As with torchcam's ``_CAM`` and Captum's ``GradientAttribution``, a base class owns what every method family shares
and a subclass says only what is different. :class:`~handlers.engine.Explainer` differentiates target logits and
:class:`~handlers.engine.VAEExplainer` the regions of a reconstruction; both get from :class:`GradientRunner`:

* the model, its device and dtype, and the checks of images, method names and layer names;
* the device options: the images' host-to-device copy (pinned, non-blocking: :mod:`handlers.engine._device`), their
  memory format (``channels_last``) and the autocast scope of the forward (``amp``);
* the scope of one batch (:meth:`GradientRunner._batch_scope`): the model frozen in eval mode and restored in
  ``finally``, autograd on even under the caller's ``inference_mode`` (off when no method needs a gradient), the
  linear shortcuts, and a fresh input tensor;
* pass planning (:func:`plan_passes`, :func:`run_passes`): one plain backward pass for the input gradient and every
  layer gradient, then one per changed ReLU rule, the graph retained for all but the last;
* the out-of-memory split (:meth:`GradientRunner._split_on_oom`): a batch that does not fit the device is retried as
  two halves, outside the ``except`` block so the failed attempt's tensors are freed first, down to single images; a
  single image that still does not fit raises ``ResourceExhaustedError``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Final, TypeVar

import torch
from torch import Tensor, nn
from torch.autograd.graph import Node

from handlers.engine._device import autocast, to_device
from handlers.engine._hooks import frozen_eval, relu_rule
from handlers.engine._layers import input_channels, resolve_layers
from handlers.engine._linear import linear_shortcuts
from handlers.engine.errors import InvalidArgumentError, ResourceExhaustedError
from handlers.engine.methods import GradientRule

__all__ = [
    "GradFn",
    "GradientRunner",
    "Pass",
    "gradient_rows",
    "gradients",
    "input_rules",
    "module_device",
    "module_dtype",
    "plan_passes",
    "run_passes",
]

_log = logging.getLogger(__name__)

M = TypeVar("M")
R = TypeVar("R")

#: The input-gradient needs of both method families and the ReLU rule of the backward pass that serves each.
_INPUT_RULES: Final[Mapping[str, GradientRule]] = {
    "input_grad": "plain",
    "guided_grad": "guided",
    "deconv_grad": "deconv",
}

#: One backward pass: its ReLU rule and the tensors it differentiates against, by layer name (``""`` = the input).
Pass = tuple[GradientRule, list[tuple[str, Tensor]]]
#: Gradients of the explained scores w.r.t. ``inputs``, ``[k, *input.shape]`` each; ``retain`` keeps the graph.
GradFn = Callable[[list[Tensor], bool], list[Tensor]]


def module_device(module: nn.Module) -> torch.device:
    """Where a model's parameters (or buffers) live; the CPU for a model with neither."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def module_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating dtype of a model's parameters, or ``default`` when it has none."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), default)


def input_rules(needs: Collection[str]) -> list[GradientRule]:
    """The ReLU rules of the input gradients that ``needs`` asks for, plain first."""
    return [rule for need, rule in _INPUT_RULES.items() if need in needs]


def plan_passes(x: Tensor, captured: Mapping[str, Tensor], layers: Sequence[str], needs: Collection[str]) -> list[Pass]:
    """The backward passes of one call: the input and every layer share one plain pass; one more per other rule."""
    plain: list[tuple[str, Tensor]] = []
    if "input_grad" in needs:
        plain.append(("", x))
    if "layer_grad" in needs:
        plain.extend((name, captured[name]) for name in layers)
    passes: list[Pass] = [("plain", plain)] if plain else []
    passes.extend((rule, [("", x)]) for rule in input_rules(needs) if rule != "plain")
    return passes


def run_passes(
    passes: Sequence[Pass], root: Node | None, grad: GradFn
) -> tuple[dict[str, Tensor], dict[GradientRule, Tensor]]:
    """Run ``passes`` over the graph below ``root`` (the ReLU rule hooked on it per pass); layer and input gradients."""
    layer_grads: dict[str, Tensor] = {}
    input_grads: dict[GradientRule, Tensor] = {}
    for i, (rule, inputs) in enumerate(passes):
        retain = i < len(passes) - 1
        with contextlib.nullcontext() if rule == "plain" else relu_rule(root, rule):
            grads = grad([t for _, t in inputs], retain)
        for (name, _), g in zip(inputs, grads, strict=True):
            if name:
                layer_grads[name] = g
            else:
                input_grads[rule] = g
    return layer_grads, input_grads


def gradients(
    output: Tensor, inputs: list[Tensor], seeds: Tensor, retain: bool, off_path: str, *, batched: bool = False
) -> list[Tensor]:
    """``d <seeds, output> / d inputs`` in one autograd call (``batched``: one result row per leading seed row).

    Raises:
        InvalidArgumentError: A requested layer does not depend on the input, or ``output`` does not depend on one
            of ``inputs`` (``off_path`` is that message: it names the explained output).
    """
    for t in inputs:
        if not t.requires_grad:
            raise InvalidArgumentError("a requested layer does not depend on the input", field="layers")
    if not output.requires_grad:  # only when every requested layer is off the path (e.g. a VAE's logvar head)
        raise InvalidArgumentError(off_path, field="layers")
    grads = torch.autograd.grad(output, inputs, seeds, retain_graph=retain, allow_unused=True, is_grads_batched=batched)
    out = [g for g in grads if g is not None]
    if len(out) != len(inputs):
        raise InvalidArgumentError(off_path, field="layers")
    return out


def gradient_rows(output: Tensor, inputs: list[Tensor], seeds: Tensor, retain: bool, off_path: str) -> list[Tensor]:
    """:func:`gradients` for each row of ``seeds`` ``[k, *output.shape]``: ``[k, *input.shape]`` per input.

    Several rows are one vmapped backward (``is_grads_batched``); a single row is a plain one.
    """
    if int(seeds.shape[0]) == 1:
        return [g.unsqueeze(0) for g in gradients(output, inputs, seeds[0], retain, off_path)]
    return gradients(output, inputs, seeds, retain, off_path, batched=True)


class GradientRunner:
    """The model an explainer explains and the machinery of one explained batch (see the module docstring).

    Args:
        model: The explained model, used as given (already on its device) and left exactly as found.
        default_dtype: The input dtype for a model without floating parameters (``None`` = keep the images' dtype).
        amp: Run the forward under ``torch.autocast`` (:func:`~handlers.engine._device.amp_dtype`: float16 on CUDA,
            bfloat16 on the CPU). Gradients come back in that dtype; the methods upcast every activation and
            gradient to float32 before they weigh, square or sum them (:class:`~handlers.engine._context.
            BatchContext`), so maps are float32.
        channels_last: Copy the images to the device in ``torch.channels_last`` (NHWC). Pair it with a model whose
            weights are channels-last (``model.to(memory_format=torch.channels_last)``, the owner's choice: the
            engine never changes the model).

    Raises:
        InvalidArgumentError: ``model`` is not an ``nn.Module``, or ``amp`` / ``channels_last`` are not bools.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        default_dtype: torch.dtype | None = None,
        amp: bool = False,
        channels_last: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for name, value in (("amp", amp), ("channels_last", channels_last)):
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"{name} must be True or False, got {value!r}", field=name)
        self._model = model
        self._in_channels = input_channels(model)
        self._default_dtype = default_dtype
        self._amp = amp
        self._memory_format = torch.channels_last if channels_last else torch.preserve_format

    @property
    def model(self) -> nn.Module:
        """The explained model."""
        return self._model

    @property
    def device(self) -> torch.device:
        """The model's device (where inputs go and maps stay)."""
        return module_device(self._model)

    @property
    def amp(self) -> bool:
        """Whether the forward runs under autocast."""
        return self._amp

    @property
    def channels_last(self) -> bool:
        """Whether images go to the device in ``torch.channels_last``."""
        return self._memory_format == torch.channels_last

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        """The forward's mixed-precision scope (nothing unless ``amp``)."""
        return autocast(self.device, self._amp)

    # ----------------------------------------------------------------------------------------------- checks
    def _parse_layers(self, layers: str | Sequence[str]) -> tuple[str, ...]:
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        return tuple(resolve_layers(self._model, names))

    def _check_images(self, images: Tensor) -> Tensor:
        """``images`` checked as a finite ``[B, C, H, W]`` float batch, on the model's device, dtype and memory format.

        The checks read the images where the caller keeps them: host images (the served path) are checked on the
        host, before their one non-blocking copy to the device, so the device is never waited for here.
        """
        if not isinstance(images, Tensor):
            raise InvalidArgumentError(f"images must be a tensor, got {type(images).__name__}", field="images")
        if images.ndim != 4:
            raise InvalidArgumentError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}", field="images")
        if not images.is_floating_point():
            raise InvalidArgumentError(f"images must be floating point, got {images.dtype}", field="images")
        if images.shape[0] < 1 or images.shape[2] < 1 or images.shape[3] < 1:
            raise InvalidArgumentError(f"images is empty: shape {tuple(images.shape)}", field="images")
        if images.shape[1] != self._in_channels:
            raise InvalidArgumentError(
                f"images have {images.shape[1]} channels, the model expects {self._in_channels}", field="images"
            )
        if not bool(torch.isfinite(images).all()):
            raise InvalidArgumentError("images contain NaN or infinite values", field="images")
        dtype = module_dtype(self._model, self._default_dtype or images.dtype)
        return to_device(images, self.device, dtype=dtype, memory_format=self._memory_format)

    @staticmethod
    def _check_methods(methods: str | Sequence[str], get: Callable[[str], M]) -> list[M]:
        """The named methods from a registry's ``get``, in request order, each once."""
        names = (methods,) if isinstance(methods, str) else tuple(methods)
        chosen: dict[str, M] = {}
        for name in names:
            if not isinstance(name, str):
                raise InvalidArgumentError(f"method names must be strings, got {name!r}", field="methods")
            chosen.setdefault(name, get(name))
        return list(chosen.values())

    # ----------------------------------------------------------------------------------------------- running
    def _split_on_oom(self, run: Callable[[slice], list[R]], batch: int, what: str) -> list[R]:
        """``run`` over all ``batch`` images; on device out-of-memory, over its halves (down to single images).

        Args:
            run: Explains the images of a slice of the batch, one result per image.
            batch: The number of images.
            what: How the warning names the batch (e.g. ``"VAE batch"``).

        Raises:
            ResourceExhaustedError: The device ran out of memory explaining a single image.
        """

        def attempt(part: slice) -> list[R]:
            try:
                return run(part)
            except torch.OutOfMemoryError:
                pass  # retried below, outside the handler so the failed attempt's tensors are freed first
            size = part.stop - part.start
            if size == 1:
                raise ResourceExhaustedError("the device ran out of memory explaining a single image")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = part.start + size // 2
            _log.warning("out of memory on a %s of %d; retrying as %d + %d", what, size, size // 2, size - size // 2)
            return attempt(slice(part.start, half)) + attempt(slice(half, part.stop))

        return attempt(slice(0, batch))

    @contextlib.contextmanager
    def _batch_scope(self, images: Tensor, grad_enabled: bool) -> Iterator[Tensor]:
        """The scope of one explained batch; yields a fresh copy of ``images`` to run the forward on.

        The model is frozen in eval mode (restored on exit, also on errors), autograd is on even under the caller's
        ``inference_mode`` (off when ``grad_enabled`` is false), and the linear shortcuts are active. The copy is
        never an inference tensor and never carries the caller's autograd history.
        """
        with (
            frozen_eval(self._model),
            torch.inference_mode(False),
            torch.enable_grad() if grad_enabled else torch.no_grad(),
            linear_shortcuts(self._model),
        ):
            yield images.clone() if images.is_inference() else images.detach()
