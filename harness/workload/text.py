"""Prompt text without a tokenizer: common English words, one word standing for one token.

The harness downloads no tokenizer, so a planned length of N tokens becomes N words drawn
from short, frequent English words: close to one token each in Llama-style tokenizers and
exactly one each for the tiny test model (tests/support/tiny_gguf.py). The server's `usage`
gives the true count; `token_calibration` reports how far the two differ.
"""

from __future__ import annotations

import numpy as np

_WORDS_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have "
    "from or one had by word but not what all were we when your can said there use an each "
    "which she do how their if will up other about out many then them these so some her "
    "would make like him into time has look two more write go see number no way could "
    "people my than first water been call who oil its now find long down day did get come "
    "made may part over new sound take only little work know place year live me back give "
    "most very after thing our just name good sentence man think say great where help "
    "through much before line right too mean old any same tell boy follow came want show "
    "also around form three small set put end does another well large must big even such "
    "because turn here why ask went men read need land different home us move"
)
VOCABULARY: tuple[str, ...] = tuple(_WORDS_TEXT.split())
"""The words prompts are made of (the order is part of the seeded output: do not reorder)."""

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
