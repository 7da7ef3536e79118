"""TorchServe entry file of VAE archives: the server's :class:`~handlers.serving.VAEHandler` with the zoo as its model
provider, exactly as ``entry_classifier.py`` does for classifiers (read there why it is thin)."""

from typing import Any

from handlers.serving import VAEHandler
from model_store.provider import zoo_model

_handler = VAEHandler(zoo_model)


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """TorchServe's module-level entry point."""
    return _handler.handle(data, context)
