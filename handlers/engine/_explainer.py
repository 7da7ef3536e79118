"""The :class:`Explainer`: one forward pass per batch, shared backward passes, one frozen result per image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch
from torch import Tensor, nn

from handlers.engine._attention import attention_modules, capture_attention, token_grid
from handlers.engine._consistency import ConsistencySpec, check_consistency
from handlers.engine._context import BatchContext, HeadWeights
from handlers.engine._features import FeatureMapSpec, select_feature_maps
from handlers.engine._grid import detect_layout, layouts_of
from handlers.engine._hooks import capture_outputs
from handlers.engine._layers import ProbeResult, patch_size, probe, resolve_layers
from handlers.engine._passes import ModelPasses
from handlers.engine._result import Explanation, FeatureMap, MapKey, Prediction
from handlers.engine._runner import (
    GradientRunner,
    gradient_rows,
    input_rules,
    module_dtype,
    plan_passes,
    run_passes,
)
from handlers.engine._targets import (
    ResolvedTargets,
    TargetsArg,
    TargetSpec,
    TopKArg,
    parse_targets,
    resolve_targets,
)
from handlers.engine.errors import InvalidArgumentError
from handlers.engine.methods import (
    GradientRule,
    Method,
    MethodParams,
    ModelFacts,
    Need,
    available_methods,
    get_method,
    with_dependencies,
)

__all__ = ["Explainer"]

_OFF_PATH = "a requested layer does not influence the model output"
#: SmoothGrad's needs and the ReLU rule of the noisy copies' backward pass that serves each.
_SMOOTH_RULES: tuple[tuple[Need, GradientRule], ...] = (
    ("smooth_input_grad", "plain"),
    ("smooth_guided_grad", "guided"),
)
_ATTENTION: frozenset[Need] = frozenset({"attention", "attention_grad"})


def _head_weights(head: nn.Linear | None, gap_layers: frozenset[str], targets: ResolvedTargets) -> HeadWeights:
    """The head's weight rows per class target, for layers whose global average is the head's input."""

    def weights(layer: str) -> Tensor:
        if head is None or layer not in gap_layers:
            raise InvalidArgumentError(
                f"head weights need a layer whose output reaches the logits through global average pooling and one "
                f"linear layer; {layer!r} does not",
                field="methods",
            )
        if targets.ids is None:
            raise InvalidArgumentError("head weights need class targets, not a callable", field="targets")
        return head.weight.detach()[targets.ids.clamp(min=0)].float()

    return weights


class Explainer(GradientRunner):
    """Predictions and explanation maps for an image classifier, from one forward pass per batch.

    The model is used as given (already on its device) and left exactly as found after every call: its train/eval
    mode per module, its parameters' ``requires_grad`` flags, no hooks and no ``.grad``.

    Args:
        model: The classifier; its output must be ``[B, classes]`` logits unless a callable target is used.
        layers: Default layer(s) for CAM-family methods by dotted module name; ``None`` = automatic choice.
        labels: Class names, by index (sequence) or id (mapping), used in :class:`Prediction`.
        amp: Run the forward under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU); maps are float32 (see
            :class:`~handlers.engine._runner.GradientRunner` for where float32 is kept).
        input_size: ``(H, W)`` for the probe pass that lists candidate layers and picks the automatic one.
        channels_last: Copy the images to the device as ``torch.channels_last`` (pair it with a channels-last model).
        black: The model-input value of a black pixel per channel (``(0 - mean) / std`` for a normalised model),
            the ``black`` baseline of Integrated Gradients; ``None`` = zeros.

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
        *,
        channels_last: bool = False,
        black: Sequence[float] | None = None,
    ) -> None:
        super().__init__(model, amp=amp, channels_last=channels_last)
        self._layers = self._parse_layers(layers) if layers is not None else None
        if self._layers is not None and not self._layers:
            raise InvalidArgumentError("layers is empty; pass None for the automatic choice", field="layers")
        self._labels = labels
        size = input_size if input_size is not None else (224, 224)
        if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
            raise InvalidArgumentError(f"input_size must be (H, W) positive ints, got {input_size!r}")
        self._input_size = (int(size[0]), int(size[1]))
        self._probe: ProbeResult | None = None
        self._black = (
            torch.zeros(self._in_channels) if black is None else torch.tensor(list(black), dtype=torch.float32)
        )
        if self._black.shape != (self._in_channels,) or not bool(torch.isfinite(self._black).all()):
            raise InvalidArgumentError(
                f"black must be {self._in_channels} finite numbers, got {black!r}", field="black"
            )
        self._patch = patch_size(model)
        self._attention = attention_modules(model)

    # ----------------------------------------------------------------------------------------------- properties
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

    def layer_channels(self, layers: Sequence[str]) -> dict[str, int]:
        """The channel count of each named layer's grid at ``input_size`` (layers without a grid are left out).

        One forward without a graph on zeros; the hooks keep only shapes, so any number of layers is cheap.
        """
        size = self._input_size
        shapes: dict[str, tuple[int, ...]] = {}
        handles = [
            module.register_forward_hook(
                lambda _m, _a, out, name=name: (
                    shapes.__setitem__(name, tuple(out.shape[1:])) if isinstance(out, Tensor) else None
                )
            )
            for name, module in resolve_layers(self._model, tuple(layers)).items()
        ]
        x = torch.zeros(1, self._in_channels, *size, device=self.device, dtype=module_dtype(self._model, torch.float32))
        try:
            with self._batch_scope(x, False) as fresh:
                self._model(fresh)
        finally:
            for handle in handles:
                handle.remove()
        out: dict[str, int] = {}
        for name, shape in shapes.items():
            layout = detect_layout(shape, size)
            if layout is not None:
                out[name] = shape[0] if layout.kind == "nchw" else shape[-1]
        return out

    # ----------------------------------------------------------------------------------------------- explain
    def explain(
        self,
        images: Tensor,
        methods: str | Sequence[str] = ("gradcam",),
        layers: str | Sequence[str] | None = None,
        targets: TargetsArg = None,
        top_k: TopKArg = None,
        top_predictions: int = 5,
        options: MethodParams | None = None,
        *,
        feature_maps: FeatureMapSpec | None = None,
        consistency: ConsistencySpec | None = None,
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
            options: Parameters of the methods that run passes of their own (Integrated Gradients, SmoothGrad,
                Score-CAM); ``None`` = the defaults of :class:`~handlers.engine.MethodParams`.
            feature_maps: Also return the top channels of layers (:attr:`Explanation.feature_maps`), from the same
                forward pass; its layers default to ``layers`` (or :attr:`default_layers`).
            consistency: Also explain transformed copies of every image (flipped, shifted, rotated) for the same
                targets and report how well each map agrees once mapped back (:attr:`Explanation.consistency`).

        Raises:
            InvalidArgumentError: Invalid images, methods, targets, top_k, or a layer that cannot be used.
            NotFoundError: Unknown layer name.
            ResourceExhaustedError: The device ran out of memory even for a single image.
        """
        x = self._check_images(images)
        chosen = self._check_methods(methods, get_method)
        if isinstance(top_predictions, bool) or not isinstance(top_predictions, int) or top_predictions < 0:
            raise InvalidArgumentError(f"top_predictions must be an int >= 0, got {top_predictions!r}")
        params = MethodParams() if options is None else options
        if not isinstance(params, MethodParams):
            raise InvalidArgumentError(f"options must be MethodParams, got {type(params).__name__}", field="options")
        spec = parse_targets(targets, top_k, int(x.shape[0]))
        layer_scope = any(m.scope == "layer" for m in chosen)
        names = self._parse_layers(layers) if layers is not None else None
        if layer_scope and names is None:
            names = self.default_layers
        if names is not None and not names:
            raise InvalidArgumentError("layers is empty; pass None for the default layers", field="layers")
        use_layers = names if layer_scope and names is not None else ()
        for m in with_dependencies(chosen):
            if "head_weights" in m.needs:
                self._check_head(m, spec, use_layers)
            if m.needs & _ATTENTION and not self._attention:
                raise InvalidArgumentError(
                    f"{m.name} needs a vision transformer whose blocks use nn.MultiheadAttention self-attention "
                    "(e.g. torchvision's vit_b_16); this model has none",
                    field="methods",
                )
        features = self._feature_request(feature_maps, names)
        if consistency is not None and not isinstance(consistency, ConsistencySpec):
            raise InvalidArgumentError("consistency must be a ConsistencySpec or None", field="consistency")
        results = self._split_on_oom(
            lambda part: self._run(
                x[part], chosen, use_layers, spec.slice(part.start, part.stop), top_predictions, params, features
            ),
            int(x.shape[0]),
            "batch",
        )
        if consistency is None or not chosen:
            return results
        fn = spec.fn
        return check_consistency(
            lambda xt, targets: self.explain(
                xt, [m.name for m in chosen], use_layers or None, fn or targets, top_predictions=0, options=params
            ),
            x,
            results,
            consistency,
        )

    # ----------------------------------------------------------------------------------------------- internals
    def _probed(self) -> ProbeResult:
        if self._probe is None:
            self._probe = probe(self._model, self._input_size)
        return self._probe

    def _facts(self) -> ModelFacts:
        result = self._probed()
        return ModelFacts(
            gap_linear_layers=result.gap_linear_layers,
            default_layers=self.default_layers,
            attention_layers=tuple(self._attention),
        )

    def _check_head(self, method: Method, spec: TargetSpec, layers: tuple[str, ...]) -> None:
        """A method that reads the head's weights needs class targets and layers that feed the head through GAP."""
        if spec.fn is not None:
            raise InvalidArgumentError(f"{method.name} needs class targets, not a callable", field="targets")
        gap = self._probed().gap_linear_layers
        bad = [n for n in layers if n not in gap]
        if bad:
            raise InvalidArgumentError(
                f"{method.name} needs layers that reach the logits through global average pooling + one linear "
                f"layer; {bad} do not (usable: {sorted(gap) or 'none'})",
                field="methods",
            )

    def _feature_request(
        self, spec: FeatureMapSpec | None, call_layers: tuple[str, ...] | None
    ) -> tuple[FeatureMapSpec, tuple[str, ...]] | None:
        """The feature-map request with its resolved layers, or ``None``."""
        if spec is None:
            return None
        if not isinstance(spec, FeatureMapSpec):
            raise InvalidArgumentError("feature_maps must be a FeatureMapSpec or None", field="feature_maps")
        if spec.layers is not None:
            layers = self._parse_layers(spec.layers)
        else:
            layers = call_layers if call_layers else self.default_layers
        return spec, layers

    def _run(
        self,
        images: Tensor,
        methods: list[Method],
        layers: tuple[str, ...],
        spec: TargetSpec,
        top_predictions: int,
        params: MethodParams,
        features: tuple[FeatureMapSpec, tuple[str, ...]] | None = None,
    ) -> list[Explanation]:
        """One batch: forward with hooks, the needed backward passes, the methods, the per-image results."""
        everything = with_dependencies(methods)
        needs: set[Need] = set().union(*(m.needs for m in everything)) if everything else set()
        rules = input_rules(needs)
        map_layers = layers if "activation" in needs or "layer_grad" in needs else ()
        feature_layers = features[1] if features is not None else ()
        graded = features is not None and features[0].needs_gradient
        grad_layers = tuple(dict.fromkeys((*layers, *feature_layers))) if graded else layers
        if graded:
            needs.add("layer_grad")
        grad_enabled = "layer_grad" in needs or "attention_grad" in needs or bool(rules)
        modules = resolve_layers(self._model, tuple(dict.fromkeys((*map_layers, *feature_layers))))
        input_hw = (int(images.shape[2]), int(images.shape[3]))
        with self._batch_scope(images, grad_enabled) as x:
            if rules:
                x.requires_grad_(True)
            with (
                capture_outputs(modules, as_leaf=True) as captured,
                capture_attention(self._attention if needs & _ATTENTION else {}) as attention,
                self._autocast(),
            ):
                output = self._model(x)
            if not isinstance(output, Tensor):
                raise InvalidArgumentError(
                    f"model returned {type(output).__name__}; the explainer needs a tensor of logits"
                )
            layouts = layouts_of(
                modules, captured, input_hw, not_run="was not called during the forward pass", patch=self._patch
            )
            targets = resolve_targets(spec, output, differentiate=grad_enabled)
            layer_grads, input_grads = run_passes(
                plan_passes(x, captured, grad_layers, needs, attention),
                targets.output.grad_fn,
                lambda inputs, retain: gradient_rows(targets.output, inputs, targets.seeds, retain, _OFF_PATH),
            )
            with torch.no_grad():
                head = None
                if "head_weights" in needs:
                    head = _head_weights(self._head(), self._probed().gap_linear_layers, targets)
                passes = self._passes(x, targets, spec, params, needs) if "passes" in needs else None
                grid = token_grid(attention, input_hw, self._patch)
                ctx = BatchContext(
                    input_hw,
                    captured,
                    layouts,
                    layer_grads,
                    input_grads,
                    head=head,
                    passes=passes,
                    rows=int(targets.seeds.shape[0]),
                    attention=attention,
                    token_grid=grid,
                )
                results = ctx.maps(methods, layers)
                predictions = self._predictions(output.detach().float(), top_predictions)
                chosen_features: list[tuple[FeatureMap, ...]] = [() for _ in range(int(images.shape[0]))]
                if features is not None:  # after the maps: reading the ranks syncs with the device
                    chosen_features = select_feature_maps(
                        features[0],
                        feature_layers,
                        {n: ctx.activation(n) for n in feature_layers},
                        {n: ctx.layer_gradient(n) for n in feature_layers} if graded else {},
                        targets.per_image(),
                    )
        completeness = ctx.reports("completeness_error")
        return self._assemble(results, targets, predictions, input_hw, completeness, chosen_features)

    def _passes(
        self, x: Tensor, targets: ResolvedTargets, spec: TargetSpec, params: MethodParams, needs: set[Need]
    ) -> ModelPasses:
        smooth: list[GradientRule] = [r for n, r in _SMOOTH_RULES if n in needs]
        return ModelPasses(
            self._model,
            x,
            targets,
            spec.fn,
            params,
            self._split_on_oom,
            self._autocast,
            self._black,
            smooth,
        )

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
        completeness: Mapping[tuple[str, str], Tensor],
        features: list[tuple[FeatureMap, ...]],
    ) -> list[Explanation]:
        out: list[Explanation] = []
        errors = {key: values.tolist() for key, values in completeness.items()}
        for i, ids in enumerate(targets.per_image()):
            maps = {
                MapKey(method, layer, target): r[j, i]
                for (method, layer), r in results.items()
                for j, target in enumerate(ids)
            }
            complete = {
                MapKey(method, layer, target): float(rows[j][i])
                for (method, layer), rows in errors.items()
                for j, target in enumerate(ids)
            }
            out.append(
                Explanation(
                    predictions[i], ids, MappingProxyType(maps), input_hw, MappingProxyType(complete), features[i]
                )
            )
        return out
