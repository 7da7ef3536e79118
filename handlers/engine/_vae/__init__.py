"""VAE area maps (issue 4): which input pixels a region of the reconstruction depends on.

Internal package; the public names are re-exported by :mod:`handlers.engine`. Adding a VAE method is one module and
one line below.
"""

from handlers.engine._vae._adapter import DecodeFn, EncodeFn, VAEModel
from handlers.engine._vae._base import (
    IMAGE_TARGET,
    LATENT_TOTAL,
    VAEContext,
    VAEMethod,
    VAENeed,
    get_vae_method,
    register_vae_method,
    vae_methods,
)
from handlers.engine._vae._explainer import STRATEGIES, Strategy, VAEExplainer
from handlers.engine._vae._regions import Box, Mask, Region, RegionLike, RegionsArg, check_region
from handlers.engine._vae._result import VAEExplanation
from handlers.engine._vae.anomaly import AnomalyLatent, AnomalyReconError
from handlers.engine._vae.area_gradcam import AreaGradCam
from handlers.engine._vae.area_guided import AreaGuided
from handlers.engine._vae.area_layercam import AreaLayerCam
from handlers.engine._vae.area_saliency import AreaSaliency
from handlers.engine._vae.latent_gradcam import LatentGradCam

for _method in (AreaSaliency, AreaGuided, AreaGradCam, AreaLayerCam, LatentGradCam, AnomalyReconError, AnomalyLatent):
    register_vae_method(_method)

__all__ = [
    "IMAGE_TARGET",
    "LATENT_TOTAL",
    "STRATEGIES",
    "Box",
    "DecodeFn",
    "EncodeFn",
    "Mask",
    "Region",
    "RegionLike",
    "RegionsArg",
    "Strategy",
    "VAEContext",
    "VAEExplainer",
    "VAEExplanation",
    "VAEMethod",
    "VAEModel",
    "VAENeed",
    "check_region",
    "get_vae_method",
    "register_vae_method",
    "vae_methods",
]
