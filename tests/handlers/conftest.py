"""Fixtures shared by the VAE handler test modules: one random-weight VAE archive and one loaded handler per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_helpers import MockContext
from vae_helpers import config, write_model_dir

from handlers.serving import VAEHandler
from model_store.provider import zoo_model


@pytest.fixture(scope="session")
def vae_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unpacked archive of the test VAE (see :func:`vae_helpers.write_model_dir`)."""
    return write_model_dir(tmp_path_factory.mktemp("vae-archive"))


@pytest.fixture(scope="session")
def vae_handler(vae_model_dir: Path) -> Iterator[VAEHandler]:
    """A VAE handler initialised as a worker would be, through the archive entry file's provider."""
    h = VAEHandler(zoo_model)
    h.handle(None, MockContext(config(), model_dir=str(vae_model_dir), gpu_id=0))
    yield h


@pytest.fixture
def vae_ctx(vae_model_dir: Path) -> MockContext:
    """A fresh mock context for the VAE handler."""
    return MockContext(config(), model_dir=str(vae_model_dir), gpu_id=0)
