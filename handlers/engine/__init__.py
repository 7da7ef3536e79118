"""The explanation engine: pure PyTorch, no TorchServe or gRPC imports.

>>> ex = Explainer(model)
>>> [result] = ex.explain(image[None], methods=("gradcam", "saliency"))
>>> result.map("gradcam")            # [h, w] at the layer's resolution
"""

from handlers.engine._explainer import Explainer
from handlers.engine._grid import GridLayout, detect_layout
from handlers.engine._reduce import GradientReduction, reduce_gradient
from handlers.engine._result import CUSTOM_TARGET, Explanation, MapKey, Prediction, minmax
from handlers.engine.errors import (
    CamserveError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)
from handlers.engine.methods import Method, MethodContext, ModelFacts, available_methods, register_method

__all__ = [
    "CUSTOM_TARGET",
    "CamserveError",
    "Explainer",
    "Explanation",
    "GradientReduction",
    "GridLayout",
    "InternalError",
    "InvalidArgumentError",
    "MapKey",
    "Method",
    "MethodContext",
    "ModelFacts",
    "NotFoundError",
    "Prediction",
    "ResourceExhaustedError",
    "UnavailableError",
    "available_methods",
    "detect_layout",
    "minmax",
    "reduce_gradient",
    "register_method",
]
