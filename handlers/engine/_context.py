"""The context of one batch: what the gradient runner computed, as methods read it, and each result computed once.

Both explainers fill the same :class:`BatchContext`; it is the classifier methods'
:class:`~handlers.engine.methods.MethodContext` and the VAE methods' :class:`~handlers.engine._vae._base.VAEContext`.
What a model kind does not have is left empty: a VAE has no linear head, a classifier no latent gradients and no
reconstruction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from torch import Tensor

from handlers.engine._grid import GridLayout
from handlers.engine.errors import InvalidArgumentError
from handlers.engine.methods import GradientRule, Scope, get_method

if TYPE_CHECKING:
    from handlers.engine._passes import ModelPasses

__all__ = ["BatchContext", "HeadWeights", "MapMethod"]

#: Rows of the linear head's weight for each target of each image, ``[k, B, C]``, for a layer (raises if unusable).
HeadWeights = Callable[[str], Tensor]

_EMPTY: Mapping[str, Tensor] = MappingProxyType({})


class MapMethod(Protocol):
    """What the context runs: a classifier :class:`~handlers.engine.methods.Method` or a VAE method."""

    @property
    def name(self) -> str:
        """The registered name (the ``MapKey.method`` of its maps)."""
        ...

    @property
    def scope(self) -> Scope:
        """``"layer"``: one map per requested layer; ``"input"``: one map at the input (layer ``""``)."""
        ...

    def compute(self, ctx: BatchContext, layer: str) -> Tensor:
        """The method's maps for this batch (see the method bases for the shapes)."""
        ...


class BatchContext:
    """What the methods of one call may read; float32 on the model's device, ``k`` target (or region) rows.

    Args:
        input_size: The input ``(H, W)``.
        activations: Captured layer outputs, in their native layout.
        layouts: How each captured output reads as a ``[B, C, h, w]`` grid.
        layer_grads: d score / d layer output, ``[k, *activation.shape]``.
        input_grads: d score / d input ``[k, B, C, H, W]`` per ReLU rule.
        head: The linear head's weight rows per target (classifiers ending in GAP + one linear layer), else ``None``.
        latents: The explained latent dimensions (VAE ``latent_gradcam``), in request order.
        latent_grads: d (latent dimension) / d layer output, ``[L, *activation.shape]`` per layer.
        passes: The model's own passes on new inputs (Integrated Gradients, SmoothGrad, Score-CAM), if any.
        rows: The number of target rows ``k`` of this call.
        attention: Self-attention weights ``[B, heads, N, N]`` by layer, in forward order (their gradients, when a
            method needs them, are in ``layer_grads`` under the same names).
        token_grid: How the attention's tokens read as a grid (set whenever ``attention`` is).
        images: The explained inputs ``[B, C, H, W]`` (VAE anomaly maps).
        reconstruction: The VAE's reconstructions of them ``[B, C, H', W']``.
        kl_grads: d KL(q(z|x) || N(0, I)) / d layer output, ``[1, *activation.shape]`` per layer (VAE).
    """

    def __init__(
        self,
        input_size: tuple[int, int],
        activations: Mapping[str, Tensor],
        layouts: Mapping[str, GridLayout],
        layer_grads: Mapping[str, Tensor],
        input_grads: Mapping[GradientRule, Tensor],
        *,
        head: HeadWeights | None = None,
        latents: tuple[int, ...] = (),
        latent_grads: Mapping[str, Tensor] = _EMPTY,
        passes: ModelPasses | None = None,
        rows: int = 1,
        attention: Mapping[str, Tensor] = _EMPTY,
        token_grid: GridLayout | None = None,
        images: Tensor | None = None,
        reconstruction: Tensor | None = None,
        kl_grads: Mapping[str, Tensor] = _EMPTY,
    ) -> None:
        self._input_size = input_size
        self._activations = activations
        self._layouts = layouts
        self._layer_grads = layer_grads
        self._input_grads = input_grads
        self._head = head
        self._latents = latents
        self._latent_grads = latent_grads
        self._passes = passes
        self._rows = rows
        self._attention = attention
        self._token_grid = token_grid
        self._images = images
        self._reconstruction = reconstruction
        self._kl_grads = kl_grads
        self._results: dict[tuple[MapMethod, str], Tensor] = {}
        self._reports: dict[str, dict[tuple[str, str], Tensor]] = {}

    @property
    def input_size(self) -> tuple[int, int]:
        """The input ``(H, W)``."""
        return self._input_size

    @property
    def rows(self) -> int:
        """The number of target rows ``k`` of this call."""
        return self._rows

    @property
    def latents(self) -> tuple[int, ...]:
        """The explained latent dimensions (empty for a classifier)."""
        return self._latents

    def activation(self, layer: str) -> Tensor:
        """The layer output as a grid ``[B, C, h, w]``."""
        return self._layouts[layer].to_grid(self._activations[layer].detach()).float()

    def layer_gradient(self, layer: str) -> Tensor:
        """d score / d layer output as a grid ``[k, B, C, h, w]``."""
        return self._layouts[layer].to_grid(self._layer_grads[layer]).float()

    def input_gradient(self, rule: GradientRule) -> Tensor:
        """d score / d input ``[k, B, C, H, W]`` under the given ReLU rule."""
        return self._input_grads[rule].float()

    def latent_gradient(self, layer: str) -> Tensor:
        """d latent dimension / d layer output as a grid ``[L, B, C, h, w]``."""
        return self._layouts[layer].to_grid(self._latent_grads[layer]).float()

    def kl_gradient(self, layer: str) -> Tensor:
        """d KL(q(z|x) || N(0, I)) / d layer output as a grid ``[1, B, C, h, w]``."""
        return self._layouts[layer].to_grid(self._kl_grads[layer]).float()

    @property
    def images(self) -> Tensor:
        """The explained inputs ``[B, C, H, W]``, float32.

        Raises:
            InvalidArgumentError: This explainer records no inputs for its methods (a classifier).
        """
        if self._images is None:
            raise InvalidArgumentError("this explainer gives its methods no input images", field="methods")
        return self._images.detach().float()

    @property
    def reconstruction(self) -> Tensor:
        """The reconstructions ``[B, C, H', W']``, float32.

        Raises:
            InvalidArgumentError: The model makes none (a classifier).
        """
        if self._reconstruction is None:
            raise InvalidArgumentError("this model makes no reconstruction", field="methods")
        return self._reconstruction.detach().float()

    def attention(self) -> tuple[Tensor, ...]:
        """Every self-attention layer's weights ``[B, heads, N, N]``, in forward order."""
        return tuple(w.detach().float() for w in self._attention.values())

    def attention_gradient(self) -> tuple[Tensor, ...]:
        """d score / d each attention layer's weights ``[k, B, heads, N, N]``, in forward order."""
        return tuple(self._layer_grads[name].float() for name in self._attention)

    @property
    def token_grid(self) -> GridLayout:
        """How the attention's tokens read as a grid (leading class/register tokens, then the patch grid)."""
        if self._token_grid is None:
            raise InvalidArgumentError("this call recorded no attention layers", field="methods")
        return self._token_grid

    def head_weights(self, layer: str) -> Tensor:
        """The linear head's weight rows for each target ``[k, B, C]``.

        Raises:
            InvalidArgumentError: The model has no such head (a VAE), or ``layer`` does not feed it.
        """
        if self._head is None:
            raise InvalidArgumentError(
                "this model has no linear head over globally average-pooled features", field="methods"
            )
        return self._head(layer)

    @property
    def passes(self) -> ModelPasses:
        """The model's own passes on new inputs.

        Raises:
            InvalidArgumentError: This explainer runs no such passes (e.g. a VAE).
        """
        if self._passes is None:
            raise InvalidArgumentError("this explainer does not run methods with passes of their own", field="methods")
        return self._passes

    def report(self, method: str, layer: str, name: str, values: Tensor) -> None:
        """Attach a quality figure ``[k, B]`` (e.g. ``completeness_error``) to ``method``'s maps on ``layer``."""
        self._reports.setdefault(name, {})[(method, layer)] = values.detach().float()

    def reports(self, name: str) -> Mapping[tuple[str, str], Tensor]:
        """Every figure called ``name`` reported in this call, by ``(method, layer)``, ``[k, B]`` each."""
        return self._reports.get(name, {})

    def result(self, method: str, layer: str) -> Tensor:
        """A registered classifier method's result for this call (computed once, shared)."""
        return self.computed(get_method(method), layer)

    def computed(self, method: MapMethod, layer: str) -> Tensor:
        """``method``'s maps on ``layer`` (``""`` for input scope), computed on first use and kept for the call."""
        key = (method, layer)
        if key not in self._results:
            self._results[key] = method.compute(self, layer)
        return self._results[key]

    def maps(self, methods: Sequence[MapMethod], layers: tuple[str, ...]) -> dict[tuple[str, str], Tensor]:
        """Every requested method's maps by ``(method name, layer)``: layer methods once per layer."""
        return {
            (m.name, layer): self.computed(m, layer)
            for m in methods
            for layer in (layers if m.scope == "layer" else ("",))
        }
