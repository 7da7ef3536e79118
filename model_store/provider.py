"""The model repository's side of a served archive: the zoo as the handler's model provider.

``model_store/entry_classifier.py`` and ``entry_vae.py`` (the files an archive carries) construct the TorchServe
handler with :func:`zoo_model`, so the server (``handlers``) never imports the model repository: the dependency points
from here to the server, never back.
"""

from __future__ import annotations

from pathlib import Path

from handlers.serving import ServedModel, ServingConfig
from model_store import zoo

__all__ = ["zoo_model"]


def zoo_model(config: ServingConfig, weights: Path | None) -> ServedModel:
    """Builds ``config.model`` through :func:`model_store.zoo.build` with its labels from :func:`model_store.zoo.info`.

    Raises:
        NotFoundError: Unknown model spec or a missing weights file.
        InvalidArgumentError: Weights that do not fit or fail their checksum.
    """
    module = zoo.build(config.model, weights)
    labels = zoo.info(config.model).get("labels")
    return ServedModel(module, tuple(labels) if labels is not None else None)
