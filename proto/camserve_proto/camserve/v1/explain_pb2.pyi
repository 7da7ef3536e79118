from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_UNSPECIFIED: _ClassVar[Encoding]
    FLOAT32: _ClassVar[Encoding]
    FLOAT16: _ClassVar[Encoding]
    UINT8: _ClassVar[Encoding]
    PNG: _ClassVar[Encoding]

class Resolution(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RESOLUTION_UNSPECIFIED: _ClassVar[Resolution]
    NATIVE: _ClassVar[Resolution]
    INPUT: _ClassVar[Resolution]

class ChannelRanking(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_RANKING_UNSPECIFIED: _ClassVar[ChannelRanking]
    CHANNEL_RANKING_MEAN_ACTIVATION: _ClassVar[ChannelRanking]
    CHANNEL_RANKING_GRADCAM_WEIGHT: _ClassVar[ChannelRanking]

class Transform(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFORM_UNSPECIFIED: _ClassVar[Transform]
    TRANSFORM_HFLIP: _ClassVar[Transform]
    TRANSFORM_SHIFT: _ClassVar[Transform]
    TRANSFORM_ROTATE: _ClassVar[Transform]
ENCODING_UNSPECIFIED: Encoding
FLOAT32: Encoding
FLOAT16: Encoding
UINT8: Encoding
PNG: Encoding
RESOLUTION_UNSPECIFIED: Resolution
NATIVE: Resolution
INPUT: Resolution
CHANNEL_RANKING_UNSPECIFIED: ChannelRanking
CHANNEL_RANKING_MEAN_ACTIVATION: ChannelRanking
CHANNEL_RANKING_GRADCAM_WEIGHT: ChannelRanking
TRANSFORM_UNSPECIFIED: Transform
TRANSFORM_HFLIP: Transform
TRANSFORM_SHIFT: Transform
TRANSFORM_ROTATE: Transform

class Tensor(_message.Message):
    __slots__ = ("shape", "encoding", "data", "value_min", "value_max", "scale")
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VALUE_MIN_FIELD_NUMBER: _ClassVar[int]
    VALUE_MAX_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    shape: _containers.RepeatedScalarFieldContainer[int]
    encoding: Encoding
    data: bytes
    value_min: float
    value_max: float
    scale: float
    def __init__(self, shape: _Optional[_Iterable[int]] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., data: _Optional[bytes] = ..., value_min: _Optional[float] = ..., value_max: _Optional[float] = ..., scale: _Optional[float] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    x0: int
    y0: int
    x1: int
    y1: int
    def __init__(self, x0: _Optional[int] = ..., y0: _Optional[int] = ..., x1: _Optional[int] = ..., y1: _Optional[int] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("height", "width", "data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    data: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("box", "mask")
    BOX_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    box: Box
    mask: Mask
    def __init__(self, box: _Optional[_Union[Box, _Mapping]] = ..., mask: _Optional[_Union[Mask, _Mapping]] = ...) -> None: ...

class Target(_message.Message):
    __slots__ = ("top_k", "class_ids", "class_names")
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    CLASS_IDS_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    top_k: int
    class_ids: _containers.RepeatedScalarFieldContainer[int]
    class_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, top_k: _Optional[int] = ..., class_ids: _Optional[_Iterable[int]] = ..., class_names: _Optional[_Iterable[str]] = ...) -> None: ...

class Image(_message.Message):
    __slots__ = ("encoded", "pixels", "id", "target", "regions")
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    encoded: bytes
    pixels: Tensor
    id: str
    target: Target
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    def __init__(self, encoded: _Optional[bytes] = ..., pixels: _Optional[_Union[Tensor, _Mapping]] = ..., id: _Optional[str] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ...) -> None: ...

class OutputOptions(_message.Message):
    __slots__ = ("encoding", "resolution", "include_reconstruction", "top_predictions")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    TOP_PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    encoding: Encoding
    resolution: Resolution
    include_reconstruction: bool
    top_predictions: int
    def __init__(self, encoding: _Optional[_Union[Encoding, str]] = ..., resolution: _Optional[_Union[Resolution, str]] = ..., include_reconstruction: _Optional[bool] = ..., top_predictions: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("images", "methods", "layers", "target", "regions", "output", "request_id", "describe", "options", "feature_maps", "consistency")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REGIONS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIBE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MAPS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    methods: _containers.RepeatedScalarFieldContainer[str]
    layers: _containers.RepeatedScalarFieldContainer[str]
    target: Target
    regions: _containers.RepeatedCompositeFieldContainer[Region]
    output: OutputOptions
    request_id: str
    describe: bool
    options: MethodOptions
    feature_maps: FeatureMapOptions
    consistency: ConsistencyOptions
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., methods: _Optional[_Iterable[str]] = ..., layers: _Optional[_Iterable[str]] = ..., target: _Optional[_Union[Target, _Mapping]] = ..., regions: _Optional[_Iterable[_Union[Region, _Mapping]]] = ..., output: _Optional[_Union[OutputOptions, _Mapping]] = ..., request_id: _Optional[str] = ..., describe: _Optional[bool] = ..., options: _Optional[_Union[MethodOptions, _Mapping]] = ..., feature_maps: _Optional[_Union[FeatureMapOptions, _Mapping]] = ..., consistency: _Optional[_Union[ConsistencyOptions, _Mapping]] = ...) -> None: ...

class MethodOptions(_message.Message):
    __slots__ = ("steps", "rule", "baseline", "samples", "noise", "seed")
    STEPS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    steps: int
    rule: str
    baseline: str
    samples: int
    noise: float
    seed: int
    def __init__(self, steps: _Optional[int] = ..., rule: _Optional[str] = ..., baseline: _Optional[str] = ..., samples: _Optional[int] = ..., noise: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class FeatureMapOptions(_message.Message):
    __slots__ = ("layers", "top_n", "ranking")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    ranking: ChannelRanking
    def __init__(self, layers: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., ranking: _Optional[_Union[ChannelRanking, str]] = ...) -> None: ...

class FeatureMap(_message.Message):
    __slots__ = ("layer", "channel", "score", "target", "data")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    layer: str
    channel: int
    score: float
    target: int
    data: Tensor
    def __init__(self, layer: _Optional[str] = ..., channel: _Optional[int] = ..., score: _Optional[float] = ..., target: _Optional[int] = ..., data: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ConsistencyOptions(_message.Message):
    __slots__ = ("transforms", "shift", "angle_degrees", "top_fraction", "omit_maps")
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    ANGLE_DEGREES_FIELD_NUMBER: _ClassVar[int]
    TOP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    OMIT_MAPS_FIELD_NUMBER: _ClassVar[int]
    transforms: _containers.RepeatedScalarFieldContainer[Transform]
    shift: float
    angle_degrees: float
    top_fraction: float
    omit_maps: bool
    def __init__(self, transforms: _Optional[_Iterable[_Union[Transform, str]]] = ..., shift: _Optional[float] = ..., angle_degrees: _Optional[float] = ..., top_fraction: _Optional[float] = ..., omit_maps: _Optional[bool] = ...) -> None: ...

class Agreement(_message.Message):
    __slots__ = ("method", "layer", "target", "transform", "spearman", "iou", "coverage", "mapped")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    SPEARMAN_FIELD_NUMBER: _ClassVar[int]
    IOU_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    MAPPED_FIELD_NUMBER: _ClassVar[int]
    method: str
    layer: str
    target: int
    transform: Transform
    spearman: float
    iou: float
    coverage: float
    mapped: Tensor
    def __init__(self, method: _Optional[str] = ..., layer: _Optional[str] = ..., target: _Optional[int] = ..., transform: _Optional[_Union[Transform, str]] = ..., spearman: _Optional[float] = ..., iou: _Optional[float] = ..., coverage: _Optional[float] = ..., mapped: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("class_id", "label", "score", "logit")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LOGIT_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    label: str
    score: float
    logit: float
    def __init__(self, class_id: _Optional[int] = ..., label: _Optional[str] = ..., score: _Optional[float] = ..., logit: _Optional[float] = ...) -> None: ...

class Map(_message.Message):
    __slots__ = ("method", "layer", "target", "data", "completeness_error")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    COMPLETENESS_ERROR_FIELD_NUMBER: _ClassVar[int]
    method: str
    layer: str
    target: int
    data: Tensor
    completeness_error: float
    def __init__(self, method: _Optional[str] = ..., layer: _Optional[str] = ..., target: _Optional[int] = ..., data: _Optional[_Union[Tensor, _Mapping]] = ..., completeness_error: _Optional[float] = ...) -> None: ...

class Geometry(_message.Message):
    __slots__ = ("original_width", "original_height", "crop", "input_width", "input_height")
    ORIGINAL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CROP_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    original_width: int
    original_height: int
    crop: Box
    input_width: int
    input_height: int
    def __init__(self, original_width: _Optional[int] = ..., original_height: _Optional[int] = ..., crop: _Optional[_Union[Box, _Mapping]] = ..., input_width: _Optional[int] = ..., input_height: _Optional[int] = ...) -> None: ...

class ImageResult(_message.Message):
    __slots__ = ("id", "predictions", "maps", "reconstruction", "error", "geometry", "feature_maps", "consistency")
    ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    FEATURE_MAPS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    id: str
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    maps: _containers.RepeatedCompositeFieldContainer[Map]
    reconstruction: Tensor
    error: Error
    geometry: Geometry
    feature_maps: _containers.RepeatedCompositeFieldContainer[FeatureMap]
    consistency: _containers.RepeatedCompositeFieldContainer[Agreement]
    def __init__(self, id: _Optional[str] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ..., maps: _Optional[_Iterable[_Union[Map, _Mapping]]] = ..., reconstruction: _Optional[_Union[Tensor, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., geometry: _Optional[_Union[Geometry, _Mapping]] = ..., feature_maps: _Optional[_Iterable[_Union[FeatureMap, _Mapping]]] = ..., consistency: _Optional[_Iterable[_Union[Agreement, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("kind", "methods", "default_methods", "layers", "default_layers", "labels", "input_width", "input_height", "max_images", "max_top_k", "max_regions", "max_image_bytes", "max_pixels", "max_response_bytes", "method_info")
    KIND_FIELD_NUMBER: _ClassVar[int]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_METHODS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LAYERS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_REGIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESPONSE_BYTES_FIELD_NUMBER: _ClassVar[int]
    METHOD_INFO_FIELD_NUMBER: _ClassVar[int]
    kind: str
    methods: _containers.RepeatedScalarFieldContainer[str]
    default_methods: _containers.RepeatedScalarFieldContainer[str]
    layers: _containers.RepeatedScalarFieldContainer[str]
    default_layers: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedScalarFieldContainer[str]
    input_width: int
    input_height: int
    max_images: int
    max_top_k: int
    max_regions: int
    max_image_bytes: int
    max_pixels: int
    max_response_bytes: int
    method_info: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    def __init__(self, kind: _Optional[str] = ..., methods: _Optional[_Iterable[str]] = ..., default_methods: _Optional[_Iterable[str]] = ..., layers: _Optional[_Iterable[str]] = ..., default_layers: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[str]] = ..., input_width: _Optional[int] = ..., input_height: _Optional[int] = ..., max_images: _Optional[int] = ..., max_top_k: _Optional[int] = ..., max_regions: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_pixels: _Optional[int] = ..., max_response_bytes: _Optional[int] = ..., method_info: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ...) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ("name", "forwards", "backwards", "per", "fixed_forwards", "bounds")
    class BoundsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORWARDS_FIELD_NUMBER: _ClassVar[int]
    BACKWARDS_FIELD_NUMBER: _ClassVar[int]
    PER_FIELD_NUMBER: _ClassVar[int]
    FIXED_FORWARDS_FIELD_NUMBER: _ClassVar[int]
    BOUNDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    forwards: int
    backwards: int
    per: _containers.RepeatedScalarFieldContainer[str]
    fixed_forwards: int
    bounds: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., forwards: _Optional[int] = ..., backwards: _Optional[int] = ..., per: _Optional[_Iterable[str]] = ..., fixed_forwards: _Optional[int] = ..., bounds: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("decode_ms", "explain_ms", "encode_ms", "batch_size")
    DECODE_MS_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_MS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    decode_ms: float
    explain_ms: float
    encode_ms: float
    batch_size: int
    def __init__(self, decode_ms: _Optional[float] = ..., explain_ms: _Optional[float] = ..., encode_ms: _Optional[float] = ..., batch_size: _Optional[int] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("results", "model_name", "model_version", "error", "timing", "request_id", "model_info", "versions")
    class VersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ImageResult]
    model_name: str
    model_version: str
    error: Error
    timing: Timing
    request_id: str
    model_info: ModelInfo
    versions: _containers.ScalarMap[str, str]
    def __init__(self, results: _Optional[_Iterable[_Union[ImageResult, _Mapping]]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., request_id: _Optional[str] = ..., model_info: _Optional[_Union[ModelInfo, _Mapping]] = ..., versions: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FiltersRequest(_message.Message):
    __slots__ = ("layers", "max_channels", "request_id")
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    MAX_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    layers: _containers.RepeatedScalarFieldContainer[str]
    max_channels: int
    request_id: str
    def __init__(self, layers: _Optional[_Iterable[str]] = ..., max_channels: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("layer", "in_channels", "out_channels", "groups", "kernel_height", "kernel_width", "rgb", "tiles", "norms", "connections")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    IN_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    OUT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    KERNEL_WIDTH_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    NORMS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    layer: str
    in_channels: int
    out_channels: int
    groups: int
    kernel_height: int
    kernel_width: int
    rgb: bool
    tiles: Tensor
    norms: Tensor
    connections: Tensor
    def __init__(self, layer: _Optional[str] = ..., in_channels: _Optional[int] = ..., out_channels: _Optional[int] = ..., groups: _Optional[int] = ..., kernel_height: _Optional[int] = ..., kernel_width: _Optional[int] = ..., rgb: _Optional[bool] = ..., tiles: _Optional[_Union[Tensor, _Mapping]] = ..., norms: _Optional[_Union[Tensor, _Mapping]] = ..., connections: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class FiltersResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "request_id", "error", "filters", "conv_layers")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CONV_LAYERS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    request_id: str
    error: Error
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    conv_layers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., conv_layers: _Optional[_Iterable[str]] = ...) -> None: ...

class LayerChannel(_message.Message):
    __slots__ = ("layer", "channel")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    layer: str
    channel: int
    def __init__(self, layer: _Optional[str] = ..., channel: _Optional[int] = ...) -> None: ...

class VisualizeRequest(_message.Message):
    __slots__ = ("class_id", "class_name", "channel", "steps", "learning_rate", "l2_decay", "jitter", "blur_every", "blur_sigma", "seed", "deadline_ms", "init", "request_id")
    CLASS_ID_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    L2_DECAY_FIELD_NUMBER: _ClassVar[int]
    JITTER_FIELD_NUMBER: _ClassVar[int]
    BLUR_EVERY_FIELD_NUMBER: _ClassVar[int]
    BLUR_SIGMA_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    INIT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    class_id: int
    class_name: str
    channel: LayerChannel
    steps: int
    learning_rate: float
    l2_decay: float
    jitter: int
    blur_every: int
    blur_sigma: float
    seed: int
    deadline_ms: int
    init: Tensor
    request_id: str
    def __init__(self, class_id: _Optional[int] = ..., class_name: _Optional[str] = ..., channel: _Optional[_Union[LayerChannel, _Mapping]] = ..., steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., l2_decay: _Optional[float] = ..., jitter: _Optional[int] = ..., blur_every: _Optional[int] = ..., blur_sigma: _Optional[float] = ..., seed: _Optional[int] = ..., deadline_ms: _Optional[int] = ..., init: _Optional[_Union[Tensor, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class VisualizeResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "request_id", "error", "image", "scores", "steps", "stopped", "elapsed_ms", "predictions")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    request_id: str
    error: Error
    image: Tensor
    scores: _containers.RepeatedScalarFieldContainer[float]
    steps: int
    stopped: str
    elapsed_ms: float
    predictions: _containers.RepeatedCompositeFieldContainer[Prediction]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., image: _Optional[_Union[Tensor, _Mapping]] = ..., scores: _Optional[_Iterable[float]] = ..., steps: _Optional[int] = ..., stopped: _Optional[str] = ..., elapsed_ms: _Optional[float] = ..., predictions: _Optional[_Iterable[_Union[Prediction, _Mapping]]] = ...) -> None: ...
