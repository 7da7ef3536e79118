"""TorchServe entry file of classifier archives (``torch-model-archiver --handler entry_classifier.py``).

Thin on purpose: the archive carries only this file; the code lives in the installed ``handlers`` and
``model_store`` packages, so a fix to either never needs an archive rebuilt. This is where the two meet: the
server's :class:`~handlers.serving.ClassifierHandler` gets the zoo as its model provider. TorchServe calls
``handle(None, context)`` once to initialise the worker, then ``handle(batch, context)`` for every batch.
"""

from typing import Any

from handlers.serving import ClassifierHandler
from model_store.provider import zoo_model

_handler = ClassifierHandler(zoo_model)


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    """TorchServe's module-level entry point."""
    return _handler.handle(data, context)
