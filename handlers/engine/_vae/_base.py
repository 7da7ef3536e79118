"""The small interface of VAE explanation methods, and the registry that names them.

VAE methods follow the classifier methods' design (``handlers.engine.methods``): the explainer owns hooks, the
forward pass and the backward passes; a method declares what it needs and combines it. The context a VAE method
reads *is* a classifier :class:`~handlers.engine.methods.MethodContext` whose ``k`` target rows are the regions, so
the area methods compose the registered classifier methods (saliency, guided backprop, Grad-CAM) instead of
re-implementing them. Only ``latent_gradcam`` needs one more quantity, the gradient of ``mu`` per latent dimension; the
anomaly maps read the input beside its reconstruction, and the gradient of the image's KL term.

The registry is separate from the classifier one, so ``Explainer`` never offers a VAE method and vice versa.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal, Protocol

from torch import Tensor

from handlers.engine.methods._base import MethodContext, Registry, Scope

__all__ = [
    "IMAGE_TARGET",
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
#: d (latent dimension) / d layer output; ``reconstruction``: the input and its reconstruction; ``kl_grad``:
#: d KL(q(z|x) || N(0, I)) / d layer output.
VAENeed = Literal["activation", "layer_grad", "input_grad", "guided_grad", "latent_grad", "reconstruction", "kl_grad"]
#: What the rows of a method's result are: one per region of the image, one per explained latent dimension, or a
#: single map for the whole image.
Rows = Literal["regions", "latents", "image"]

#: ``MapKey.target`` of ``latent_gradcam``'s total attention map (the sum over the explained latent dimensions).
LATENT_TOTAL = -1
#: ``MapKey.target`` of the one map of a method that describes the whole image, not a region (the anomaly maps).
IMAGE_TARGET = -1


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

    @property
    def images(self) -> Tensor:
        """The explained inputs ``[B, C, H, W]``."""
        ...

    @property
    def reconstruction(self) -> Tensor:
        """What the decoder made of them ``[B, C, H', W']`` (of ``mu``, or of the seeded sample)."""
        ...

    def kl_gradient(self, layer: str) -> Tensor:
        """d KL(q(z|x) || N(0, I)) / d layer output, one row ``[1, B, C, h, w]`` (each image's own KL term)."""
        ...


class VAEMethod(ABC):
    """One VAE explanation method. Subclasses set the class attributes and implement :meth:`compute`."""

    name: ClassVar[str]
    scope: ClassVar[Scope]
    rows: ClassVar[Rows] = "regions"
    needs: ClassVar[frozenset[VAENeed]] = frozenset()

    @abstractmethod
    def compute(self, ctx: VAEContext, layer: str) -> Tensor:
        """Return float32 maps, one row per region (``[k, B, ...]``), per latent (``[L + 1, B, ...]``, the last
        row being the total) or one for the image (``[1, B, ...]``): ``[.., h, w]`` for layer scope, ``[.., C, H,
        W]`` (or ``[.., H, W]``) for input scope."""


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
