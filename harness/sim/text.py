"""A deterministic stand-in tokenizer and the words the simulator "generates".

Real token counts depend on the model's tokenizer; the simulator only needs counts that
are stable for a given text and roughly proportional to its length, as BPE counts are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

# Word pieces of at most six characters (about BPE's 4-5 characters a token on English),
# and each punctuation mark alone.
_TOKEN_RE = re.compile(r"\w{1,6}|[^\w\s]")

BOS_TOKENS = 1
"""The begin-of-text token a Llama tokenizer puts in front of every prompt."""
CHAT_TOKENS_PER_MESSAGE = 4
"""Llama-3 chat template per message: start header, role, end header, end of turn."""
CHAT_GENERATION_PROMPT_TOKENS = 4
"""The assistant header the template appends for the reply."""

_VOCABULARY = (
    "the model serves tokens to many users at once while the scheduler keeps every batch "
    "full and the cache warm so that latency stays low and throughput stays high under "
    "load from clients across the cluster today"
)
WORDS: tuple[str, ...] = tuple(" " + w for w in _VOCABULARY.split(" "))
"""Output vocabulary: one word is one output token, with a leading space as BPE has."""

WORDS_JSON: tuple[bytes, ...] = tuple(json.dumps(w).encode() for w in WORDS)
"""Each word as a JSON string literal, pre-encoded for the streaming hot path."""


def count_tokens(text: str) -> int:
    """Tokens of a piece of text under the stand-in tokenizer."""
    return len(_TOKEN_RE.findall(text))


def completion_prompt_tokens(prompt: str | Sequence[int]) -> int:
    """Prompt tokens of a completions request: text is tokenized, token ids are counted."""
    if isinstance(prompt, str):
        return BOS_TOKENS + count_tokens(prompt)
    return len(prompt)


def chat_prompt_tokens(contents: Sequence[str]) -> int:
    """Prompt tokens of a chat request given the text of each message."""
    return (
        BOS_TOKENS
        + sum(CHAT_TOKENS_PER_MESSAGE + count_tokens(c) for c in contents)
        + CHAT_GENERATION_PROMPT_TOKENS
    )


def output_word(salt: int, index: int) -> int:
    """Index into WORDS of a request's index-th output token; the salt varies requests."""
    return (salt + index) % len(WORDS)
