"""Request validation of the "look inside" options: ``FeatureMapOptions`` and ``ConsistencyOptions``.

Both apply to classifiers. Feature-map layers are checked against the model's candidate layers like
``ExplainRequest.layers``; ranges and enum values are checked here or by the engine's own specs (whose errors name
the field, e.g. ``consistency.shift``). A consistency check explains one more copy of every image per transform, so
the copies count against the image limit: the worker's work is bounded before any of it starts.
"""

from __future__ import annotations

from typing import Final

from camserve_proto.camserve.v1 import explain_pb2

from handlers.engine import ConsistencySpec, FeatureMapSpec, FeatureRank, Transform
from handlers.engine.errors import InvalidArgumentError, NotFoundError, ResourceExhaustedError
from handlers.serving._types import Capabilities, InsightSpec

__all__ = ["DEFAULT_TOP_N", "parse_insight"]

DEFAULT_TOP_N: Final = 8

_RANKS: Final[dict[int, FeatureRank]] = {
    explain_pb2.CHANNEL_RANKING_UNSPECIFIED: "mean",
    explain_pb2.CHANNEL_RANKING_MEAN_ACTIVATION: "mean",
    explain_pb2.CHANNEL_RANKING_GRADCAM_WEIGHT: "gradcam",
}
_TRANSFORMS: Final[dict[int, Transform]] = {
    explain_pb2.TRANSFORM_HFLIP: "hflip",
    explain_pb2.TRANSFORM_SHIFT: "shift",
    explain_pb2.TRANSFORM_ROTATE: "rotate",
}


def parse_insight(
    msg: explain_pb2.ExplainRequest, caps: Capabilities, layers: tuple[str, ...], max_targets: int
) -> InsightSpec:
    """The validated feature-map and consistency options of a request (empty when it sets neither).

    Args:
        msg: The request.
        caps: The model's capabilities.
        layers: The request's validated layers (empty when it has no layer method).
        max_targets: The most targets any image of the request explains (feature maps per image for Grad-CAM
            ranking scale with it).

    Raises:
        InvalidArgumentError: A bad option, naming its field; either option on a VAE.
        NotFoundError: An unknown feature-map layer.
        ResourceExhaustedError: Too many feature maps per image, or too many images with their transformed copies.
    """
    features = _feature_maps(msg.feature_maps, caps, layers, max_targets) if msg.HasField("feature_maps") else None
    if not msg.HasField("consistency"):
        return InsightSpec(feature_maps=features)
    consistency = _consistency(msg.consistency, caps)
    copies = len(msg.images) * (1 + len(consistency.transforms))
    if copies > caps.limits.max_images:
        raise ResourceExhaustedError(
            f"{len(msg.images)} images with {len(consistency.transforms)} transformed copies each are {copies} "
            f"images to explain; the limit is {caps.limits.max_images}",
            field="consistency",
        )
    return InsightSpec(features, consistency, not msg.consistency.omit_maps)


def _classifier_only(caps: Capabilities, field: str) -> None:
    if caps.kind != "classifier":
        raise InvalidArgumentError(f"{field} applies to classifiers", field=field)


def _feature_maps(
    msg: explain_pb2.FeatureMapOptions, caps: Capabilities, layers: tuple[str, ...], max_targets: int
) -> FeatureMapSpec:
    _classifier_only(caps, "feature_maps")
    for i, name in enumerate(msg.layers):
        if name not in caps.layer_grids:
            raise NotFoundError(
                f"layer {name!r} is not an explainable layer of this model (describe the model to list them)",
                field=f"feature_maps.layers[{i}]",
            )
    chosen = tuple(dict.fromkeys(msg.layers)) or layers or caps.default_layers
    if msg.ranking not in _RANKS:
        raise InvalidArgumentError(f"unknown channel ranking {msg.ranking}", field="feature_maps.ranking")
    rank = _RANKS[msg.ranking]
    top_n = int(msg.top_n) or DEFAULT_TOP_N
    count = len(chosen) * top_n * (max_targets if rank == "gradcam" else 1)
    limit = caps.limits.max_feature_maps
    if count > limit:
        raise ResourceExhaustedError(
            f"{len(chosen)} layer(s) x top_n {top_n}"
            + (f" x {max_targets} targets" if rank == "gradcam" else "")
            + f" are {count} feature maps per image; the limit is {limit}",
            field="feature_maps.top_n",
        )
    return FeatureMapSpec(layers=chosen, top_n=top_n, rank=rank)


def _consistency(msg: explain_pb2.ConsistencyOptions, caps: Capabilities) -> ConsistencySpec:
    _classifier_only(caps, "consistency")
    transforms: list[Transform] = []
    for i, value in enumerate(msg.transforms):
        if value not in _TRANSFORMS:
            raise InvalidArgumentError(
                f"unknown transform {value}; use TRANSFORM_HFLIP, TRANSFORM_SHIFT or TRANSFORM_ROTATE",
                field=f"consistency.transforms[{i}]",
            )
        transforms.append(_TRANSFORMS[value])
    defaults = ConsistencySpec()
    angle = float(msg.angle_degrees)
    try:  # the engine's spec checks the ranges; its errors name consistency.shift, consistency.top_fraction, ...
        return ConsistencySpec(
            transforms=tuple(transforms) or defaults.transforms,
            shift=float(msg.shift) or defaults.shift,
            angle=angle if angle != 0.0 else defaults.angle,
            top_fraction=float(msg.top_fraction) or defaults.top_fraction,
        )
    except InvalidArgumentError as exc:
        if exc.field == "consistency.angle":  # the wire's name for it
            raise InvalidArgumentError(exc.message, field="consistency.angle_degrees") from None
        raise
