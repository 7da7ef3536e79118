"""The one small interface every explanation method implements, and the registry that names them.

As in torchcam's ``core.py``, the engine owns hooks, the forward pass, the backward passes and result assembly; a
method only declares which quantities it needs and combines them in :meth:`Method.compute`. Which backward passes
run is decided once per call from the union of the requested methods' needs, so methods share them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Generic, Literal, Protocol, TypeVar

from torch import Tensor

from handlers.engine._grid import GridLayout
from handlers.engine.errors import InvalidArgumentError
from handlers.engine.methods._params import Cost

if TYPE_CHECKING:
    from handlers.engine._passes import ModelPasses

__all__ = [
    "GradientRule",
    "Method",
    "MethodContext",
    "ModelFacts",
    "Need",
    "Registry",
    "Scope",
    "available_methods",
    "get_method",
    "register_method",
]

M = TypeVar("M")

#: Quantities a method can ask for. ``activation``: the layer output as a grid; ``layer_grad``: d score / d layer
#: output (the shared CAM backward); ``input_grad``/``guided_grad``/``deconv_grad``: d score / d input under the
#: normal, guided-backprop or deconvnet ReLU rule; ``head_weights``: the linear head's weight rows per target (only
#: on layers that reach the logits through global average pooling + that head, and only for class targets);
#: ``passes``: the method runs the model on inputs of its own (``MethodContext.passes``); ``smooth_input_grad`` /
#: ``smooth_guided_grad``: SmoothGrad's noisy copies, one forward shared by both ReLU rules.
#: ``attention``: every self-attention layer's weights (vision transformers built from ``nn.MultiheadAttention``);
#: ``attention_grad``: d score / d those weights (in the shared plain backward pass).
Need = Literal[
    "activation",
    "layer_grad",
    "input_grad",
    "guided_grad",
    "deconv_grad",
    "head_weights",
    "passes",
    "smooth_input_grad",
    "smooth_guided_grad",
    "attention",
    "attention_grad",
]
#: ``layer`` methods give one map per requested layer; ``input`` methods one map at the input (layer ``""``).
Scope = Literal["layer", "input"]
GradientRule = Literal["plain", "guided", "deconv"]


@dataclass(frozen=True)
class ModelFacts:
    """What an explainer knows about its model, for :meth:`Method.applicable`.

    Attributes:
        gap_linear_layers: Layers whose output feeds the logits through global average pooling + one linear layer.
        default_layers: The layers used when a call gives none.
        attention_layers: The self-attention layers (``nn.MultiheadAttention``) that attention methods read.
    """

    gap_linear_layers: frozenset[str]
    default_layers: tuple[str, ...]
    attention_layers: tuple[str, ...] = ()


class MethodContext(Protocol):
    """What a method may read while computing; everything is float32 on the model's device, ``k`` target rows."""

    @property
    def input_size(self) -> tuple[int, int]:
        """The input ``(H, W)``."""
        ...

    @property
    def rows(self) -> int:
        """The number of target rows ``k`` (a target-independent method repeats its map ``k`` times)."""
        ...

    def activation(self, layer: str) -> Tensor:
        """The layer output as a grid ``[B, C, h, w]``."""
        ...

    def layer_gradient(self, layer: str) -> Tensor:
        """d score / d layer output as a grid ``[k, B, C, h, w]``."""
        ...

    def input_gradient(self, rule: GradientRule) -> Tensor:
        """d score / d input ``[k, B, C, H, W]`` under the given ReLU rule."""
        ...

    def head_weights(self, layer: str) -> Tensor:
        """Rows of the linear head's weight for each target ``[k, B, C]`` (GAP + linear models only)."""
        ...

    def attention(self) -> tuple[Tensor, ...]:
        """Every self-attention layer's weights ``[B, heads, N, N]``, in forward order."""
        ...

    def attention_gradient(self) -> tuple[Tensor, ...]:
        """d score / d each attention layer's weights ``[k, B, heads, N, N]``, in forward order."""
        ...

    @property
    def token_grid(self) -> GridLayout:
        """How the attention's ``N`` tokens read as a grid: leading (class/register) tokens, then ``h x w`` patches."""
        ...

    def result(self, method: str, layer: str) -> Tensor:
        """Another method's result for the same call (computed once, shared), e.g. guided Grad-CAM's parts."""
        ...

    @property
    def passes(self) -> ModelPasses:
        """The model's own passes on new inputs (methods that need ``passes``)."""
        ...

    def report(self, method: str, layer: str, name: str, values: Tensor) -> None:
        """Attach a per-map quality figure ``[k, B]`` (e.g. ``completeness_error``) to ``method``'s maps."""
        ...


class Method(ABC):
    """One explanation method. Subclasses set the class attributes and implement :meth:`compute`."""

    name: ClassVar[str]
    scope: ClassVar[Scope]
    needs: ClassVar[frozenset[Need]] = frozenset()
    #: Methods whose results :meth:`compute` reads through ``ctx.result`` (their needs are added to this one's).
    depends_on: ClassVar[tuple[str, ...]] = ()
    #: Model passes beyond the prediction's forward, as ``describe`` states them (see :class:`Cost`).
    cost: ClassVar[Cost] = Cost()

    def applicable(self, facts: ModelFacts) -> bool:
        """Whether the method can run on this model at all (e.g. CAM needs a GAP + linear head)."""
        return True

    @abstractmethod
    def compute(self, ctx: MethodContext, layer: str) -> Tensor:
        """Return ``[k, B, h, w]`` (layer scope) or ``[k, B, C, H, W]`` (input scope) float32 maps."""


class Registry(Generic[M]):
    """Named method instances, in registration order (one for classifier methods, one for VAE methods).

    Args:
        what: How error messages name an entry, e.g. ``"method"`` or ``"VAE method"``.
    """

    def __init__(self, what: str) -> None:
        self._what = what
        self._entries: dict[str, M] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def add(self, instance: M, *, replace: bool) -> M:
        """Registers ``instance`` under its ``name`` (a taken name needs ``replace=True``)."""
        name: str = getattr(instance, "name")  # noqa: B009 - both method bases declare it as a ClassVar
        if name in self._entries and not replace:
            raise InvalidArgumentError(f"{self._what} {name!r} is already registered", field="methods")
        self._entries[name] = instance
        return instance

    def names(self) -> tuple[str, ...]:
        """All registered names, in registration order."""
        return tuple(self._entries)

    def get(self, name: str) -> M:
        """The entry called ``name``; an unknown name raises InvalidArgumentError listing the available ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise InvalidArgumentError(
                f"unknown {self._what} {name!r}; available: {', '.join(self._entries)}", field="methods"
            ) from None


_REGISTRY: Registry[Method] = Registry("method")


def register_method(method: type[Method] | Method, *, replace: bool = False) -> Method:
    """Make a method available by its ``name``; returns the registered instance.

    Raises:
        InvalidArgumentError: The name is taken (pass ``replace=True`` to override deliberately), or the method
            depends on a method that is not registered.
    """
    instance = method() if isinstance(method, type) else method
    if instance.name in _REGISTRY and not replace:
        raise InvalidArgumentError(f"method {instance.name!r} is already registered", field="methods")
    missing = [d for d in instance.depends_on if d not in _REGISTRY]
    if missing:
        raise InvalidArgumentError(f"method {instance.name!r} depends on unregistered {missing}", field="methods")
    return _REGISTRY.add(instance, replace=replace)


def available_methods() -> tuple[str, ...]:
    """Names of all registered methods, in registration order."""
    return _REGISTRY.names()


def get_method(name: str) -> Method:
    """The registered method called ``name``.

    Raises:
        InvalidArgumentError: Unknown name (the message lists the available ones).
    """
    return _REGISTRY.get(name)


def with_dependencies(methods: Sequence[Method]) -> list[Method]:
    """The given methods plus every method they depend on (``depends_on``, transitively), dependencies first."""
    out: dict[str, Method] = {}

    def add(m: Method) -> None:
        for dep in m.depends_on:
            add(get_method(dep))
        out.setdefault(m.name, m)

    for m in methods:
        add(m)
    return list(out.values())
