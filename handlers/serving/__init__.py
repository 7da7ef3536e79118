"""TorchServe handlers for camserve: request decoding and validation, the engine call, response encoding.

A TorchServe archive carries a thin entry file that constructs :class:`ClassifierHandler` or :class:`VAEHandler` with a
:class:`ModelProvider` (camserve's own archives: ``model_store/entry_classifier.py`` and ``entry_vae.py``, which pass
the model zoo); the server itself never imports a model repository. Everything else is importable for tests and for
in-process use. The handler contract (inputs, outputs, config keys, REST behaviour) is in
``handlers/serving/README.md``; the model-input preprocessing shared with in-process callers is
:mod:`handlers.preprocess`.

Modules, one job each: ``base`` (the handler's stages), ``classifier`` / ``vae`` (the engine call of each model kind),
``_provider`` (the model seam), ``_config`` (the ``camserve`` config section), ``_facts`` (model facts measured at
load), ``_types`` (domain types), ``_parse`` (request validation), ``_images`` (defensive image decoding),
``_sizing`` (the response bound), ``_maps`` (map encodings), ``_encode`` (protobuf answers), ``_rest`` (the curl
dialect), ``_routing`` (how each batch item is answered), ``_errors`` (exception to in-band error), ``_health``
(device choice and sticky CUDA errors).
"""

from handlers.serving._config import Limits, ServingConfig, parse_config
from handlers.serving._health import exit_if_sticky_cuda_error, is_sticky_cuda_error, select_device
from handlers.serving._images import ALLOWED_FORMATS, decode_image, pixels_to_tensor
from handlers.serving._maps import decode_array, encode_array, encoded_size_bound
from handlers.serving._provider import ModelProvider, ServedModel
from handlers.serving._rest import request_from_rest
from handlers.serving._types import Capabilities, MethodShape, ParsedRequest
from handlers.serving.base import ExplainHandler
from handlers.serving.classifier import ClassifierHandler
from handlers.serving.vae import VAEHandler

__all__ = [
    "ALLOWED_FORMATS",
    "Capabilities",
    "ClassifierHandler",
    "ExplainHandler",
    "Limits",
    "MethodShape",
    "ModelProvider",
    "ParsedRequest",
    "ServedModel",
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
