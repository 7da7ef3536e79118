"""The small interface of VAE explanation methods, and the registry that names them.

VAE methods follow the classifier methods' design (``handlers.engine.methods``): the explainer owns hooks, the
forward pass and the backward passes; a method declares what it needs and combines it. The context a VAE method
reads *is* a classifier :class:`~handlers.engine.methods.MethodContext` whose ``k`` target rows are the regions, so
the area methods compose the registered classifier methods (saliency, guided backprop, Grad-CAM) instead of
re-implementing them. Only ``latent_gradcam`` needs one more quantity, the gradient of ``mu`` per latent dimension.

The registry is separate from the classifier one, so ``Explainer`` never offers a VAE method and vice versa.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal, Protocol

from torch import Tensor

from handlers.engine.methods._base import MethodContext, Registry, Scope

__all__ = [
    "LATENT_TOTAL",
    "Rows",
    "VAEContext",
    "VAEMethod",
    "VAENeed",
    "get_vae_method",
    "register_vae_method",
    "vae_methods",
]

#: ``activation``: encoder layer output; ``layer_grad``: d region score / d layer output; ``input_grad`` /
#: ``guided_grad``: d region score / d input under the normal / guided-backprop ReLU rule; ``latent_grad``:
#: d (latent dimension) / d layer output.
VAENeed = Literal["activation", "layer_grad", "input_grad", "guided_grad", "latent_grad"]
#: What the rows of a method's result are: one per region of the image, or one per explained latent dimension.
Rows = Literal["regions", "latents"]

#: ``MapKey.target`` of ``latent_gradcam``'s total attention map (the sum over the explained latent dimensions).
LATENT_TOTAL = -1


class VAEContext(MethodContext, Protocol):
    """What a VAE method may read; float32 on the model's device. ``k`` = the most regions of any image.

    A classifier :class:`~handlers.engine.methods.MethodContext` whose target rows are the regions (``activation``
    is the encoder layer's output, ``layer_gradient``/``input_gradient`` are d region score / d layer or input,
    zero rows past an image's last region; ``head_weights`` raises: a VAE has no classifier head), plus the
    explained latent dimensions and their gradients.
    """

    @property
    def latents(self) -> tuple[int, ...]:
        """The explained latent dimensions (channels of a spatial latent), in request order."""
        ...

    def latent_gradient(self, layer: str) -> Tensor:
        """d (sum over positions of ``mu[:, c]``) / d layer output, one row per explained latent ``[L, B, C, h, w]``."""
        ...


class VAEMethod(ABC):
    """One VAE explanation method. Subclasses set the class attributes and implement :meth:`compute`."""

    name: ClassVar[str]
    scope: ClassVar[Scope]
    rows: ClassVar[Rows] = "regions"
    needs: ClassVar[frozenset[VAENeed]] = frozenset()

    @abstractmethod
    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        """Return float32 maps, one row per region (``[k, B, ...]``) or per latent (``[L + 1, B, ...]``, the last
        row being the total): ``[.., h, w]`` for layer scope, ``[.., C, H, W]`` for input scope."""


_REGISTRY: Registry[VAEMethod] = Registry("VAE method")


def register_vae_method(method: type[VAEMethod] | VAEMethod, *, replace: bool = False) -> VAEMethod:
    """Make a VAE method available by its ``name``; returns the registered instance.

    Raises:
        InvalidArgumentError: The name is taken (pass ``replace=True`` to override deliberately).
    """
    return _REGISTRY.add(method() if isinstance(method, type) else method, replace=replace)


def vae_methods() -> tuple[str, ...]:
    """Names of all registered VAE methods, in registration order."""
    return _REGISTRY.names()


def get_vae_method(name: str) -> VAEMethod:
    """The registered VAE method called ``name``.

    Raises:
        InvalidArgumentError: Unknown name (the message lists the available ones).
    """
    return _REGISTRY.get(name)
