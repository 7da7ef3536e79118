"""The explanation engine: pure PyTorch, no TorchServe or gRPC imports."""

from handlers.engine.errors import (
    CamserveError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
)

__all__ = [
    "CamserveError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "UnavailableError",
]
