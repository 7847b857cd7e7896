"""Shared fixtures. Real models live in a store inside the checkout (`.ponder-home/`, ignored by
git), so they are pulled once per machine and reused by later runs and CI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ponder.models.store import ModelStore

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_HOME = REPO_ROOT / ".ponder-home"


@pytest.fixture(scope="session")
def model_store() -> ModelStore:
    return ModelStore(home=TEST_HOME)


@pytest.fixture(scope="session")
def smollm2_path(model_store: ModelStore) -> Path:
    """The real SmolLM2-135M GGUF (about 100 MB), pulled on first use."""
    return model_store.ensure("smollm2-135m")


@pytest.fixture(scope="session")
def server_url(smollm2_path: Path) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server over SmolLM2, on a free loopback port."""
    pytest.importorskip("llama_cpp.server.app")
    from tests.llama_server import llama_server

    with llama_server(smollm2_path) as url:
        yield url
