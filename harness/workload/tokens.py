"""Prompts of the asked length in the server's own tokens.

Without a tokenizer a planned length of N becomes N words, and a server counts them as it
tokenises them (about 1.17 tokens a word for Llama 3 on the harness's words). With
``workload.tokenizer`` the harness learns which of its words are exactly one token, alone
and after a space, under the model's tokenizer: a local Hugging Face ``tokenizer.json``
(read with the ``tokenizers`` package) or the target's own ``/tokenize`` endpoint (vLLM,
llama.cpp and the built-in simulator serve one). Prompts drawn from those words alone have
one token a word, which a check on a 64-word sample confirms before any load. The tokens
the server adds around every prompt (BOS, the chat template, what the first word costs in
the template's context) are measured on one request of a probe prompt shaped like the
others, and taken off the text, so that ``usage.prompt_tokens`` is the asked length.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from harness.errors import ConfigError, UsageError
from harness.spec.vocabulary import VOCABULARY

TARGET: Final = "target"
#: Fewer single-token words than this and prompts would repeat too much to be realistic.
MIN_WORDS: Final = 16
CHECK_WORDS: Final = 64
PROBE_WORDS: Final = 32

Counter = Callable[[str], int]


@dataclass(frozen=True)
class TokenTable:
    """The words that are one token each under the model's tokenizer, and what it adds."""

    words: tuple[str, ...]
    source: str  # "tokenizer.json at PATH" or "the target's /tokenize"
    overhead: int = 0  # tokens the server adds to every prompt (BOS, chat template)
    count: Counter | None = field(default=None, compare=False)  # any text, exactly
    local: bool = False  # count runs here (a tokenizer.json), not as a request to the target

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "words": len(self.words), "overhead": self.overhead,
                "counts_replies": self.local}  # fmt: skip

    def text_tokens(self, asked: int) -> int:
        """Words of text for a prompt the server should count as ``asked`` tokens."""
        return max(1, asked - self.overhead)

    def random_words(self, rng: np.random.Generator, count: int, lead: bool = True) -> str:
        """``count`` one-token words; with ``lead``, the first is always the same word, so
        what the first word of a message costs in the template's context (a SentencePiece
        word after a newline has no space mark) is the same for every prompt and is part of
        the measured overhead."""
        if count <= 0:
            return ""
        picks = rng.integers(0, len(self.words), size=count)
        if lead:
            picks[0] = 0
        return " ".join(self.words[i] for i in picks.tolist())

    def probe(self) -> str:
        """A prompt shaped like every generated one, to measure the overhead on."""
        return self.random_words(np.random.default_rng(0), PROBE_WORDS)


def table_to_wire(table: TokenTable) -> dict[str, Any]:
    """The table as a distributed run's master sends it to its workers."""
    return {"words": list(table.words), "source": table.source, "overhead": table.overhead,
            "local": table.local}  # fmt: skip


def table_from_wire(data: Mapping[str, Any], count: Counter | None) -> TokenTable:
    """A worker's copy; ``count`` is its own local tokenizer (None for the target's)."""
    words = tuple(str(w) for w in data["words"])
    local = bool(data["local"]) and count is not None
    return TokenTable(words, str(data["source"]), int(data["overhead"]), count, local)


def local_counter(spec: str, base_dir: Path, source: str) -> tuple[Counter, str]:
    """A counter from a local tokenizer.json (or a model folder holding one); a bad path is a
    ConfigError naming ``source`` (the scenario file) and workload.tokenizer."""
    from tokenizers import Tokenizer  # a Rust extension: loaded only when asked for

    path = Path(spec).expanduser()
    path = path if path.is_absolute() else base_dir / path
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        why = f"expected a tokenizer.json, none at {file}"
        raise ConfigError(source, [("workload.tokenizer", why)])
    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # the library raises its own Exception subclass
        why = f"{file} is not a Hugging Face tokenizer.json: {exc}"
        raise ConfigError(source, [("workload.tokenizer", why)]) from None

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count, f"tokenizer.json at {file}"


def server_counter(
    base_url: str, model: str, headers: Mapping[str, str], timeout_s: float
) -> Counter:
    """A counter that asks the target's /tokenize (at the server's root, beside /v1).

    One body both dialects read: vLLM's {model, prompt, add_special_tokens} and llama.cpp's
    {content, add_special}; the answer has ``count`` (vLLM) or ``tokens`` (both)."""
    root = base_url.rstrip("/")
    root = root[: -len("/v1")] if root.endswith("/v1") else root
    url = root + "/tokenize"
    sent = {**headers, "Content-Type": "application/json", "Accept": "application/json"}

    def count(text: str) -> int:
        body = json.dumps({"model": model, "prompt": text, "add_special_tokens": False,
                           "content": text, "add_special": False}).encode()  # fmt: skip
        req = urllib.request.Request(url, data=body, headers=sent, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise UsageError(
                f"workload.tokenizer: target: {url} answered HTTP {exc.code}; the target has "
                "no /tokenize (a LiteLLM gateway does not forward it): name a local "
                "tokenizer.json instead"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise UsageError(f"workload.tokenizer: target: {url} did not answer: {exc}") from None
        if isinstance(answer, dict) and isinstance(answer.get("count"), int):
            return int(answer["count"])
        if isinstance(answer, dict) and isinstance(answer.get("tokens"), list):
            return len(answer["tokens"])
        raise UsageError(f"workload.tokenizer: target: {url} answered without a token count")

    return count


def learn_table(count: Counter, source: str, local: bool = False) -> TokenTable:
    """The vocabulary words that are one token alone and after a space, checked on a sample."""
    words = tuple(w for w in VOCABULARY if count(f"{w} {w}") == 2)
    if len(words) < MIN_WORDS:
        raise UsageError(
            f"workload.tokenizer: only {len(words)} of the harness's {len(VOCABULARY)} words are "
            f"one token under {source}; at least {MIN_WORDS} are needed"
        )
    table = TokenTable(words, source, 0, count, local)
    sample = table.random_words(np.random.default_rng(0), CHECK_WORDS, lead=False)
    counted = count(sample)
    if counted != CHECK_WORDS:
        raise UsageError(
            f"workload.tokenizer: {CHECK_WORDS} one-token words count as {counted} tokens "
            f"together under {source}: its tokens are not additive over spaces, so prompt "
            "lengths cannot be made exact"
        )
    return table


def with_overhead(table: TokenTable, served: int | None, probe: str) -> TokenTable:
    """The table with the server's per-prompt tokens: ``served`` (usage.prompt_tokens of a
    request whose text was ``probe``) minus the text's own count."""
    if served is None or table.count is None:
        return table
    extra = served - table.count(probe)
    return TokenTable(table.words, table.source, max(0, extra), table.count, table.local)
