"""The :class:`Explainer`: one forward pass per batch, shared backward passes, one frozen result per image."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch
from torch import Tensor, nn

from handlers.engine._grid import GridLayout, layouts_of
from handlers.engine._hooks import capture_outputs, frozen_eval, relu_rule
from handlers.engine._layers import ProbeResult, input_channels, probe, resolve_layers
from handlers.engine._linear import linear_shortcuts
from handlers.engine._result import Explanation, MapKey, Prediction
from handlers.engine._targets import (
    ResolvedTargets,
    TargetsArg,
    TargetSpec,
    TopKArg,
    parse_targets,
    resolve_targets,
)
from handlers.engine.errors import InvalidArgumentError, ResourceExhaustedError
from handlers.engine.methods import GradientRule, Method, ModelFacts, Need, available_methods, get_method

__all__ = ["Explainer"]

_log = logging.getLogger(__name__)

_INPUT_NEEDS: dict[Need, GradientRule] = {"input_grad": "plain", "guided_grad": "guided", "deconv_grad": "deconv"}


def _closure(methods: Sequence[Method]) -> list[Method]:
    """The requested methods plus everything they depend on, dependencies first."""
    out: dict[str, Method] = {}

    def add(m: Method) -> None:
        for dep in m.depends_on:
            add(get_method(dep))
        out.setdefault(m.name, m)

    for m in methods:
        add(m)
    return list(out.values())


class _Context:
    """The :class:`~handlers.engine.methods.MethodContext` of one batch."""

    def __init__(
        self,
        input_size: tuple[int, int],
        activations: Mapping[str, Tensor],
        layouts: Mapping[str, GridLayout],
        layer_grads: Mapping[str, Tensor],
        input_grads: Mapping[GradientRule, Tensor],
        targets: ResolvedTargets,
        head: nn.Linear | None,
        gap_layers: frozenset[str] | None,
    ) -> None:
        self._input_size = input_size
        self._activations = activations
        self._layouts = layouts
        self._layer_grads = layer_grads
        self._input_grads = input_grads
        self._targets = targets
        self._head = head
        self._gap_layers = gap_layers
        self._results: dict[tuple[str, str], Tensor] = {}

    @property
    def input_size(self) -> tuple[int, int]:
        return self._input_size

    def activation(self, layer: str) -> Tensor:
        return self._layouts[layer].to_grid(self._activations[layer].detach()).float()

    def layer_gradient(self, layer: str) -> Tensor:
        return self._layouts[layer].to_grid(self._layer_grads[layer]).float()

    def input_gradient(self, rule: GradientRule) -> Tensor:
        return self._input_grads[rule].float()

    def head_weights(self, layer: str) -> Tensor:
        if self._head is None or self._gap_layers is None or layer not in self._gap_layers:
            raise InvalidArgumentError(
                f"cam needs a layer whose output reaches the logits through global average pooling and one linear "
                f"layer; {layer!r} does not",
                field="methods",
            )
        if self._targets.ids is None:
            raise InvalidArgumentError("cam needs class targets, not a callable", field="targets")
        return self._head.weight.detach()[self._targets.ids.clamp(min=0)].float()

    def result(self, method: str, layer: str) -> Tensor:
        key = (method, layer)
        if key not in self._results:
            self._results[key] = get_method(method).compute(self, layer)
        return self._results[key]


class Explainer:
    """Predictions and explanation maps for an image classifier, from one forward pass per batch.

    The model is used as given (already on its device) and left exactly as found after every call: its train/eval
    mode per module, its parameters' ``requires_grad`` flags, no hooks and no ``.grad``.

    Args:
        model: The classifier; its output must be ``[B, classes]`` logits unless a callable target is used.
        layers: Default layer(s) for CAM-family methods by dotted module name; ``None`` = automatic choice.
        labels: Class names, by index (sequence) or id (mapping), used in :class:`Prediction`.
        amp: Run the forward under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU); maps are float32.
        input_size: ``(H, W)`` for the probe pass that lists candidate layers and picks the automatic one.

    Raises:
        InvalidArgumentError: Bad arguments.
        NotFoundError: A layer name that the model does not have.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: str | Sequence[str] | None = None,
        labels: Sequence[str] | Mapping[int, str] | None = None,
        amp: bool = False,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise InvalidArgumentError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self._model = model
        self._layers = self._parse_layers(layers) if layers is not None else None
        if self._layers is not None and not self._layers:
            raise InvalidArgumentError("layers is empty; pass None for the automatic choice", field="layers")
        self._labels = labels
        self._amp = bool(amp)
        size = input_size if input_size is not None else (224, 224)
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise InvalidArgumentError(f"input_size must be (H, W) positive ints, got {input_size!r}")
        self._input_size = (int(size[0]), int(size[1]))
        self._in_channels = input_channels(model)
        self._probe: ProbeResult | None = None

    # ----------------------------------------------------------------------------------------------- properties
    @property
    def model(self) -> nn.Module:
        """The explained model."""
        return self._model

    @property
    def device(self) -> torch.device:
        """The model's device (where inputs go and maps stay)."""
        for p in self._model.parameters():
            return p.device
        for b in self._model.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def candidate_layers(self) -> tuple[str, ...]:
        """Dotted names of layers with a spatial output at ``input_size``, in forward order (runs the probe)."""
        return self._probed().candidates

    @property
    def layer_grids(self) -> Mapping[str, tuple[int, int]]:
        """``(h, w)`` of every candidate layer's grid at ``input_size``: the native size of its CAM-family maps."""
        return self._probed().grids

    @property
    def default_layers(self) -> tuple[str, ...]:
        """The layers given to the constructor, or the automatically chosen one (runs the probe)."""
        return self._layers if self._layers is not None else (self._probed().automatic,)

    @property
    def methods(self) -> tuple[str, ...]:
        """Registered methods applicable to this model with the default layers (``cam`` needs GAP + linear)."""
        facts = self._facts()
        return tuple(name for name in available_methods() if get_method(name).applicable(facts))

    # ----------------------------------------------------------------------------------------------- explain
    def explain(
        self,
        images: Tensor,
        methods: str | Sequence[str] = ("gradcam",),
        layers: str | Sequence[str] | None = None,
        targets: TargetsArg = None,
        top_k: TopKArg = None,
        top_predictions: int = 5,
    ) -> list[Explanation]:
        """Explain a batch: one :class:`Explanation` per image, in order.

        Args:
            images: ``[B, C, H, W]`` float tensor in the model's input space (already normalised); moved to the
                model's device if needed.
            methods: Method names (see :func:`available_methods`); empty = predictions only.
            layers: Layer(s) for layer methods; ``None`` = :attr:`default_layers`; several = a layer sweep.
            targets: ``None`` = top-1; an int = that class for every image; a list with one item per image, each an
                int or a list of ints (ragged allowed); or a callable from the model output to ``[B]`` scores.
            top_k: Explain the top-k classes (an int, or one int per image); exclusive with ``targets``.
            top_predictions: How many top predictions to report per image.

        Raises:
            InvalidArgumentError: Invalid images, methods, targets, top_k, or a layer that cannot be used.
            NotFoundError: Unknown layer name.
            ResourceExhaustedError: The device ran out of memory even for a single image.
        """
        x = self._check_images(images)
        chosen = self._check_methods(methods)
        if isinstance(top_predictions, bool) or not isinstance(top_predictions, int) or top_predictions < 0:
            raise InvalidArgumentError(f"top_predictions must be an int >= 0, got {top_predictions!r}")
        spec = parse_targets(targets, top_k, int(x.shape[0]))
        layer_scope = any(m.scope == "layer" for m in chosen)
        names = self._parse_layers(layers) if layers is not None else None
        if layer_scope and names is None:
            names = self.default_layers
        if names is not None and not names:
            raise InvalidArgumentError("layers is empty; pass None for the default layers", field="layers")
        use_layers = names if layer_scope and names is not None else ()
        if "cam" in {m.name for m in chosen}:
            if spec.fn is not None:
                raise InvalidArgumentError("cam needs class targets, not a callable", field="targets")
            gap = self._probed().gap_linear_layers
            bad = [n for n in use_layers if n not in gap]
            if bad:
                raise InvalidArgumentError(
                    f"cam needs layers that reach the logits through global average pooling + one linear layer; "
                    f"{bad} do not (usable: {sorted(gap) or 'none'})",
                    field="methods",
                )
        return self._explain_splitting(x, chosen, use_layers, spec, top_predictions)

    # ----------------------------------------------------------------------------------------------- internals
    def _probed(self) -> ProbeResult:
        if self._probe is None:
            self._probe = probe(self._model, self._input_size)
        return self._probe

    def _facts(self) -> ModelFacts:
        result = self._probed()
        return ModelFacts(gap_linear_layers=result.gap_linear_layers, default_layers=self.default_layers)

    def _parse_layers(self, layers: str | Sequence[str]) -> tuple[str, ...]:
        names = (layers,) if isinstance(layers, str) else tuple(layers)
        return tuple(resolve_layers(self._model, names))

    def _check_images(self, images: Tensor) -> Tensor:
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
        dtype = next((p.dtype for p in self._model.parameters() if p.is_floating_point()), images.dtype)
        return images.to(device=self.device, dtype=dtype)

    def _check_methods(self, methods: str | Sequence[str]) -> list[Method]:
        names = (methods,) if isinstance(methods, str) else tuple(methods)
        chosen: dict[str, Method] = {}
        for name in names:
            if not isinstance(name, str):
                raise InvalidArgumentError(f"method names must be strings, got {name!r}", field="methods")
            chosen.setdefault(name, get_method(name))
        return list(chosen.values())

    def _explain_splitting(
        self, x: Tensor, methods: list[Method], layers: tuple[str, ...], spec: TargetSpec, top_predictions: int
    ) -> list[Explanation]:
        """Run a batch; on device out-of-memory, retry its halves (down to single images)."""
        try:
            return self._run(x, methods, layers, spec, top_predictions)
        except torch.OutOfMemoryError:
            pass  # retried below, outside the handler so the failed attempt's tensors are freed first
        batch = int(x.shape[0])
        if batch == 1:
            raise ResourceExhaustedError("the device ran out of memory explaining a single image")
        if x.device.type == "cuda":
            torch.cuda.empty_cache()
        half = batch // 2
        _log.warning("out of memory on a batch of %d; retrying as %d + %d", batch, half, batch - half)
        return self._explain_splitting(
            x[:half], methods, layers, spec.slice(0, half), top_predictions
        ) + self._explain_splitting(x[half:], methods, layers, spec.slice(half, batch), top_predictions)

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[object]:
        if not self._amp:
            return contextlib.nullcontext()
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _run(
        self, images: Tensor, methods: list[Method], layers: tuple[str, ...], spec: TargetSpec, top_predictions: int
    ) -> list[Explanation]:
        """One batch: forward with hooks, the needed backward passes, the methods, the per-image results."""
        everything = _closure(methods)
        needs: set[Need] = set().union(*(m.needs for m in everything)) if everything else set()
        rules = [rule for need, rule in _INPUT_NEEDS.items() if need in needs]
        grad_enabled = "layer_grad" in needs or bool(rules)
        modules = resolve_layers(self._model, layers) if "activation" in needs or "layer_grad" in needs else {}
        input_hw = (int(images.shape[2]), int(images.shape[3]))
        with (
            frozen_eval(self._model),
            torch.inference_mode(False),
            torch.enable_grad() if grad_enabled else torch.no_grad(),
        ):
            # A fresh tensor: never an inference tensor, never the caller's autograd history.
            x = images.clone() if images.is_inference() else images.detach()
            if rules:
                x.requires_grad_(True)
            with (
                linear_shortcuts(self._model),
                capture_outputs(modules, as_leaf=True) as captured,
                self._autocast(x.device),
            ):
                output = self._model(x)
            if not isinstance(output, Tensor):
                raise InvalidArgumentError(
                    f"model returned {type(output).__name__}; the explainer needs a tensor of logits"
                )
            layouts = layouts_of(modules, captured, input_hw, not_run="was not called during the forward pass")
            targets = resolve_targets(spec, output, differentiate=grad_enabled)
            layer_grads, input_grads = self._backward(x, targets, captured, layers, needs, rules)
            with torch.no_grad():
                head = self._head() if any(m.name == "cam" for m in everything) else None
                gap = self._probed().gap_linear_layers if head is not None else None
                ctx = _Context(input_hw, captured, layouts, layer_grads, input_grads, targets, head, gap)
                results: dict[tuple[str, str], Tensor] = {}
                for m in methods:
                    for layer in layers if m.scope == "layer" else ("",):
                        results[(m.name, layer)] = ctx.result(m.name, layer)
                predictions = self._predictions(output.detach().float(), top_predictions)
        return self._assemble(results, targets, predictions, input_hw)

    def _backward(
        self,
        x: Tensor,
        targets: ResolvedTargets,
        captured: Mapping[str, Tensor],
        layers: tuple[str, ...],
        needs: set[Need],
        rules: list[GradientRule],
    ) -> tuple[dict[str, Tensor], dict[GradientRule, Tensor]]:
        """All backward passes of a call: one plain pass for input + all layer gradients, one per changed rule."""
        layer_grads: dict[str, Tensor] = {}
        input_grads: dict[GradientRule, Tensor] = {}
        plain_inputs: list[tuple[str, Tensor]] = []
        if "input_grad" in needs:
            plain_inputs.append(("", x))
        if "layer_grad" in needs:
            plain_inputs.extend((name, captured[name]) for name in layers)
        passes: list[tuple[GradientRule, list[tuple[str, Tensor]]]] = []
        if plain_inputs:
            passes.append(("plain", plain_inputs))
        passes.extend((rule, [("", x)]) for rule in rules if rule != "plain")
        for i, (rule, inputs) in enumerate(passes):
            retain = i < len(passes) - 1
            with contextlib.nullcontext() if rule == "plain" else relu_rule(targets.output.grad_fn, rule):
                grads = self._grad(targets, [t for _, t in inputs], retain)
            for (name, _), g in zip(inputs, grads, strict=True):
                if name:
                    layer_grads[name] = g
                else:
                    input_grads[rule] = g
        return layer_grads, input_grads

    @staticmethod
    def _grad(targets: ResolvedTargets, inputs: list[Tensor], retain: bool) -> list[Tensor]:
        """Gradients of every target row w.r.t. ``inputs``, ``[k, *input.shape]`` each, in one autograd call."""
        for t in inputs:
            if not t.requires_grad:
                raise InvalidArgumentError("a requested layer does not depend on the input", field="layers")
        if targets.k == 1:
            grads = torch.autograd.grad(
                targets.output, inputs, targets.seeds[0], retain_graph=retain, allow_unused=True
            )
            out = [None if g is None else g.unsqueeze(0) for g in grads]
        else:
            grads = torch.autograd.grad(
                targets.output, inputs, targets.seeds, retain_graph=retain, allow_unused=True, is_grads_batched=True
            )
            out = list(grads)
        if any(g is None for g in out):
            raise InvalidArgumentError("a requested layer does not influence the model output", field="layers")
        return [g for g in out if g is not None]

    def _head(self) -> nn.Linear | None:
        name = self._probed().head
        module = dict(self._model.named_modules()).get(name) if name else None
        return module if isinstance(module, nn.Linear) else None

    def _label(self, class_id: int) -> str | None:
        labels = self._labels
        if labels is None:
            return None
        if isinstance(labels, Mapping):
            return labels.get(class_id)
        return labels[class_id] if 0 <= class_id < len(labels) else None

    def _predictions(self, logits: Tensor, top: int) -> list[tuple[Prediction, ...]]:
        if logits.ndim != 2:
            return [() for _ in range(logits.shape[0])]
        k = min(top, int(logits.shape[1]))
        probs = logits.softmax(dim=1)
        scores, ids = probs.topk(k, dim=1)
        chosen_logits = logits.gather(1, ids)
        rows = zip(ids.tolist(), scores.tolist(), chosen_logits.tolist(), strict=True)
        return [
            tuple(Prediction(c, s, z, self._label(c)) for c, s, z in zip(ci, si, zi, strict=True))
            for ci, si, zi in rows
        ]

    @staticmethod
    def _assemble(
        results: Mapping[tuple[str, str], Tensor],
        targets: ResolvedTargets,
        predictions: list[tuple[Prediction, ...]],
        input_hw: tuple[int, int],
    ) -> list[Explanation]:
        out: list[Explanation] = []
        for i, ids in enumerate(targets.per_image):
            maps = {
                MapKey(method, layer, target): r[j, i]
                for (method, layer), r in results.items()
                for j, target in enumerate(ids)
            }
            out.append(Explanation(predictions[i], ids, MappingProxyType(maps), input_hw))
        return out
