"""Prompt text without a tokenizer: common English words, one word standing for one token.

The harness downloads no tokenizer, so a planned length of N tokens becomes N words drawn
from short, frequent English words: close to one token each in Llama-style tokenizers and
exactly one each for the tiny test model (tests/support/tiny_gguf.py). The server's `usage`
gives the true count; `token_calibration` reports how far the two differ.
"""

from __future__ import annotations

import numpy as np

from harness.spec.vocabulary import VOCABULARY

_VOCAB = np.array(VOCABULARY)


def random_words(rng: np.random.Generator, count: int) -> str:
    """`count` words drawn uniformly from VOCABULARY, joined by single spaces."""
    if count <= 0:
        return ""
    picks = rng.integers(0, len(_VOCAB), size=count)
    return " ".join(_VOCAB[picks].tolist())


def word_count(text: str) -> int:
    """Length of a text in the harness's stand-in tokens (whitespace-separated words)."""
    return len(text.split())
