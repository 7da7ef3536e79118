"""Explanation methods: one module each, registered by name. Adding a method is one file and one line below."""

from handlers.engine.methods._base import (
    GradientRule,
    Method,
    MethodContext,
    ModelFacts,
    Need,
    Scope,
    available_methods,
    get_method,
    register_method,
    with_dependencies,
)
from handlers.engine.methods._params import Cost, MethodParams
from handlers.engine.methods.attention_rollout import AttentionRollout
from handlers.engine.methods.attention_rollout_max import AttentionRolloutMax
from handlers.engine.methods.cam import Cam
from handlers.engine.methods.deconvnet import Deconvnet
from handlers.engine.methods.eigencam import EigenCam
from handlers.engine.methods.gradcam import GradCam
from handlers.engine.methods.gradcam_pp import GradCamPlusPlus
from handlers.engine.methods.gradient_attention import GradientAttention
from handlers.engine.methods.guided_backprop import GuidedBackprop
from handlers.engine.methods.guided_gradcam import GuidedGradCam
from handlers.engine.methods.hirescam import HiResCam
from handlers.engine.methods.integrated_gradients import IntegratedGradients
from handlers.engine.methods.layercam import LayerCam
from handlers.engine.methods.saliency import Saliency
from handlers.engine.methods.scorecam import ScoreCam
from handlers.engine.methods.smoothgrad import (
    SmoothGradGuidedBackprop,
    SmoothGradIntegratedGradients,
    SmoothGradSaliency,
)
from handlers.engine.methods.xgradcam import XGradCam

for _method in (Saliency, GuidedBackprop, Deconvnet, GradCam, GradCamPlusPlus, XGradCam, LayerCam, GuidedGradCam, Cam):
    register_method(_method)
for _driven in (
    IntegratedGradients,
    SmoothGradSaliency,
    SmoothGradGuidedBackprop,
    SmoothGradIntegratedGradients,
    ScoreCam,
):
    register_method(_driven)
register_method(HiResCam)
register_method(EigenCam)
register_method(AttentionRollout)
register_method(AttentionRolloutMax)
register_method(GradientAttention)

__all__ = [
    "Cost",
    "GradientRule",
    "Method",
    "MethodContext",
    "MethodParams",
    "ModelFacts",
    "Need",
    "Scope",
    "available_methods",
    "get_method",
    "register_method",
    "with_dependencies",
]
