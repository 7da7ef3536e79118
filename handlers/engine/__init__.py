"""The explanation engine: pure PyTorch, no TorchServe or gRPC imports.

>>> ex = Explainer(model)
>>> [result] = ex.explain(image[None], methods=("gradcam", "saliency"))
>>> result.map("gradcam")            # [h, w] at the layer's resolution
"""

from handlers.engine._consistency import TRANSFORMS, ConsistencySpec, Transform
from handlers.engine._explainer import Explainer
from handlers.engine._features import FEATURE_RANKS, FeatureMapSpec, FeatureRank
from handlers.engine._filters import FilterView, conv_layers, filters
from handlers.engine._grid import GridLayout, detect_layout
from handlers.engine._reduce import GradientReduction, reduce_gradient
from handlers.engine._result import (
    CUSTOM_TARGET,
    NO_TARGET,
    Agreement,
    Explanation,
    FeatureMap,
    MapKey,
    Prediction,
    minmax,
)
from handlers.engine._vae import (
    IMAGE_TARGET,
    LATENT_TOTAL,
    Box,
    Mask,
    Region,
    RegionsArg,
    VAEExplainer,
    VAEExplanation,
    VAEMethod,
    VAEModel,
    check_region,
    get_vae_method,
    register_vae_method,
    vae_methods,
)
from handlers.engine._visualize import Visualization, VisualizeSpec, visualize
from handlers.engine.errors import (
    CamserveError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from handlers.engine.methods import (
    Cost,
    Method,
    MethodContext,
    MethodParams,
    ModelFacts,
    available_methods,
    get_method,
    register_method,
)

__all__ = [
    "CUSTOM_TARGET",
    "FEATURE_RANKS",
    "IMAGE_TARGET",
    "LATENT_TOTAL",
    "NO_TARGET",
    "TRANSFORMS",
    "Agreement",
    "Box",
    "CamserveError",
    "ConsistencySpec",
    "Cost",
    "Explainer",
    "Explanation",
    "FeatureMap",
    "FeatureMapSpec",
    "FeatureRank",
    "FilterView",
    "GradientReduction",
    "GridLayout",
    "InternalError",
    "InvalidArgumentError",
    "MapKey",
    "Mask",
    "Method",
    "MethodContext",
    "MethodParams",
    "ModelFacts",
    "NotFoundError",
    "Prediction",
    "Region",
    "RegionsArg",
    "ResourceExhaustedError",
    "Transform",
    "UnavailableError",
    "VAEExplainer",
    "VAEExplanation",
    "VAEMethod",
    "VAEModel",
    "Visualization",
    "VisualizeSpec",
    "available_methods",
    "check_region",
    "conv_layers",
    "detect_layout",
    "filters",
    "get_method",
    "get_vae_method",
    "minmax",
    "reduce_gradient",
    "register_method",
    "register_vae_method",
    "vae_methods",
    "visualize",
]
