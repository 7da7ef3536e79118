"""TorchServe handlers for camserve: request decoding and validation, the engine call, response encoding.

TorchServe loads a thin entry file (``entry_classifier.py`` or ``entry_vae.py``) that calls :class:`ClassifierHandler`
or :class:`VAEHandler`; everything else is importable for tests and for in-process use, e.g. :class:`Preprocessor` to
build exactly the model input the server builds from an image (same crop, resampling and normalisation). The handler
contract (inputs, outputs, config keys, REST behaviour) is in ``handlers/serving/README.md``.
"""

from handlers.serving._codec import Capabilities, MethodShape, ParsedRequest, request_from_rest
from handlers.serving._config import Limits, ServingConfig, parse_config
from handlers.serving._images import ALLOWED_FORMATS, Geometry, Preprocessor, decode_image, pixels_to_tensor
from handlers.serving._maps import decode_array, encode_array, encoded_size_bound
from handlers.serving.base import ExplainHandler, exit_if_sticky_cuda_error, is_sticky_cuda_error, select_device
from handlers.serving.classifier import ClassifierHandler
from handlers.serving.vae import VAEHandler

__all__ = [
    "ALLOWED_FORMATS",
    "Capabilities",
    "ClassifierHandler",
    "ExplainHandler",
    "Geometry",
    "Limits",
    "MethodShape",
    "ParsedRequest",
    "Preprocessor",
    "ServingConfig",
    "VAEHandler",
    "decode_array",
    "decode_image",
    "encode_array",
    "encoded_size_bound",
    "exit_if_sticky_cuda_error",
    "is_sticky_cuda_error",
    "parse_config",
    "pixels_to_tensor",
    "request_from_rest",
    "select_device",
]
