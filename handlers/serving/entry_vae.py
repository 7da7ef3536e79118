"""TorchServe entry file for VAE archives (``torch-model-archiver --handler entry_vae.py``).

Thin on purpose: the archive carries only this file; the code lives in the installed ``handlers`` package, so a fix
to the server never needs an archive rebuilt. TorchServe calls ``handle(None, context)`` once to initialise the
worker, then ``handle(batch, context)`` for every batch.
"""

from typing import Any

from handlers.serving.vae import VAEHandler

_handler = VAEHandler()


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """TorchServe's module-level entry point."""
    return _handler.handle(data, context)
