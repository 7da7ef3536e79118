"""camserve client SDK: predictions with their explanation maps from a camserve server, over gRPC.

::

    import camserve

    with camserve.Client("127.0.0.1:7070", token_file="key_file.json") as client:
        result = client.explain("cat.jpg", model="imagenet-efficientnet-lite0", methods=["gradcam"])
        print(result.top.label, result.map("gradcam").upsample((224, 224)).normalized().shape)

Pictures (overlays, gradient images, panels) are in :mod:`camserve.render`, the HTML gallery in
:mod:`camserve.gallery`; the ``camserve`` command is :mod:`camserve.cli`. The SDK depends on grpcio, protobuf,
numpy and pillow only (no torch).
"""

from camserve._aio import AsyncClient
from camserve._client import Client
from camserve._filters import Filter, Filters
from camserve._insight import Agreement, Consistency, FeatureMap, FeatureMaps
from camserve._maps import Map, MapKey
from camserve._request import Input
from camserve._results import (
    Box,
    ExplainResult,
    Geometry,
    MethodCost,
    ModelEntry,
    ModelInfo,
    Prediction,
    Timing,
)
from camserve._visualize import Visualization
from camserve.errors import (
    CamserveError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

__version__ = "0.1.0"

__all__ = [
    "Agreement",
    "AsyncClient",
    "Box",
    "CamserveError",
    "Client",
    "Consistency",
    "DeadlineExceeded",
    "ExplainResult",
    "FeatureMap",
    "FeatureMaps",
    "Filter",
    "Filters",
    "Geometry",
    "Input",
    "Internal",
    "InvalidArgument",
    "Map",
    "MapKey",
    "MethodCost",
    "ModelEntry",
    "ModelInfo",
    "NotFound",
    "Prediction",
    "ResourceExhausted",
    "Timing",
    "Unauthenticated",
    "Unavailable",
    "Visualization",
    "__version__",
]
