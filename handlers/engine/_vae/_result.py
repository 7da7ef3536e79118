"""The frozen, per-image result of :meth:`VAEExplainer.explain`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from handlers.engine._result import Explanation
from handlers.engine._vae._regions import Region

__all__ = ["VAEExplanation"]


@dataclass(frozen=True, kw_only=True)
class VAEExplanation(Explanation):
    """Reconstruction and explanation maps for one image, from one forward pass.

    An :class:`~handlers.engine.Explanation` whose targets are the image's regions, so code that reads maps by
    :class:`~handlers.engine.MapKey` (and the ``map`` / ``upsampled`` / ``normalized`` helpers) serves both kinds:

    * ``area_saliency`` / ``area_guided``: ``MapKey(method, "", r)`` -> ``[C, H, W]`` input gradient of region ``r``;
    * ``area_gradcam``: ``MapKey("area_gradcam", layer, r)`` -> ``[h, w]`` on the layer's grid;
    * ``latent_gradcam``: ``MapKey("latent_gradcam", layer, c)`` -> ``[h, w]`` for latent dimension ``c`` (see
      :attr:`latents`), and ``target == LATENT_TOTAL`` (-1) for the mean over them.

    Attributes:
        predictions: Always empty (a VAE has no classes).
        targets: Region indices ``0 .. len(regions) - 1``.
        maps: Float32 maps on the model's device, at native resolution.
        input_size: The model input ``(H, W)``.
        reconstruction: ``[C, H', W']`` float32, the decoded ``mu`` (or the seeded sample, when one was asked for).
        regions: The image's regions as validated :class:`Box` / :class:`Mask` objects, in request order.
        latents: The latent dimensions ``latent_gradcam`` explained (empty when it was not requested).
    """

    reconstruction: Tensor
    regions: tuple[Region, ...]
    latents: tuple[int, ...] = ()
