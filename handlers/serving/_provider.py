"""The model seam: what a handler asks of whoever knows the models, so the server never imports a model repository.

A TorchServe archive's entry file constructs the handler with a :class:`ModelProvider` (camserve's archives pass
``model_store.provider.zoo_model``); the handler reads its config, finds the weights file in the archive and calls the
provider once per worker. Anything that builds an ``nn.Module`` from a :class:`~handlers.serving.ServingConfig` can
serve: a model repository, a test's fixed-weight model, another runtime's loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torch import nn

from handlers.serving._config import ServingConfig

__all__ = ["ModelProvider", "ServedModel"]


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A model ready to serve and the facts about it that its config may leave out.

    Attributes:
        module: The network, in eval mode with frozen parameters (the handler moves it to the worker's device).
        labels: Class names by id (classifiers), used when the config says ``labels: null``; ``None`` = unnamed.
    """

    module: nn.Module
    labels: tuple[str, ...] | None = None


class ModelProvider(Protocol):
    """Builds the configured model: ``provider(config, weights) -> ServedModel``."""

    def __call__(self, config: ServingConfig, weights: Path | None) -> ServedModel:
        """Build ``config.model`` with ``weights`` (the archive's weights file, ``None`` = the model's own).

        Raises:
            CamserveError: The model cannot be built (unknown model, missing or unusable weights).
        """
        ...
