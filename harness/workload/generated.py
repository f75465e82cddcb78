"""Workloads made of generated words: synthetic, shared-prefix and multi-turn conversations."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from harness.spec.vocabulary import VOCABULARY
from harness.spec.workload import (
    MultiTurnWorkload,
    SharedPrefixWorkload,
    SyntheticWorkload,
    prefix_words_needed,
)
from harness.workload.base import Messages, RequestSpec, SingleRequest, aux_rng, session_rng
from harness.workload.text import random_words, word_count
from harness.workload.tokens import TokenTable

_GROUP_ORDER, _PREFIX_TEXT, _PREFIX_HEAD = 1, 2, 3  # aux_rng purposes


class Synthetic:
    """Request i: `prompt_tokens` random words and `max_tokens`, both drawn from (seed, i)."""

    needs_reply_text = False

    def __init__(self, spec: SyntheticWorkload) -> None:
        self.spec = spec
        self.tokens: TokenTable | None = None

    def use_tokens(self, table: TokenTable) -> None:
        """Plan lengths in the model's tokens (harness.workload.tokens) from now on."""
        self.tokens = table

    def request(self, index: int) -> RequestSpec:
        rng = session_rng(self.spec.seed, index)
        words = self.spec.prompt_tokens.draw(rng)
        max_tokens = self.spec.max_tokens.draw(rng)
        if self.tokens is not None:
            text = self.tokens.random_words(rng, self.tokens.text_tokens(words))
            return RequestSpec.single(text, max_tokens, words)
        return RequestSpec.single(random_words(rng, words), max_tokens, words)

    def session(self, index: int) -> SingleRequest:
        return SingleRequest(self.request(index))


class SharedPrefix:
    """Request i: the prefix of its group, a space, then its own suffix.

    Requests go to groups in blocks of `num_prefixes`, each block a seeded permutation, so all
    groups are in use from the first block on and their order is not cyclic (a cyclic order is
    the worst case for an LRU prefix cache, which would measure the eviction policy instead).
    Prefixes start with the group number written in vocabulary words, so they are distinct.
    """

    needs_reply_text = False

    def __init__(self, spec: SharedPrefixWorkload) -> None:
        self.spec = spec
        self.tokens: TokenTable | None = None
        self._words: tuple[str, ...] = VOCABULARY
        self._set_heads()
        self._order = functools.lru_cache(maxsize=4)(self._make_order)

    def _set_heads(self) -> None:
        digits = prefix_words_needed(self.spec.num_prefixes, len(self._words))
        rng = aux_rng(self.spec.seed, _PREFIX_HEAD)
        self._head_offsets = rng.integers(0, len(self._words), digits)
        self.prefix = functools.lru_cache(maxsize=1024)(self._make_prefix)

    def use_tokens(self, table: TokenTable) -> None:
        """Plan lengths in the model's tokens: prefixes and suffixes of one-token words, the
        server's own tokens taken off each suffix."""
        self.tokens = table
        self._words = table.words
        self._set_heads()

    def group_of(self, index: int) -> int:
        """The prefix group request `index` belongs to."""
        block, position = divmod(index, self.spec.num_prefixes)
        return int(self._order(block)[position])

    def _make_order(self, block: int) -> npt.NDArray[np.int64]:
        return aux_rng(self.spec.seed, _GROUP_ORDER, block).permutation(self.spec.num_prefixes)

    def _make_prefix(self, group: int) -> str:
        rng = aux_rng(self.spec.seed, _PREFIX_TEXT, group)
        length = self.spec.prefix_tokens.draw(rng)
        head: list[str] = []
        rest = group
        words = self._words
        for offset in self._head_offsets.tolist():  # group in base len(words), shuffled
            rest, digit = divmod(rest, len(words))
            head.append(words[(digit + offset) % len(words)])
        if self.tokens is not None:  # the lead word first, then the group's words
            tail = self.tokens.random_words(rng, max(length - len(head) - 1, 0), lead=False)
            lead = self.tokens.words[0]
            return " ".join([lead, *head]) + (" " + tail if tail else "")
        tail = random_words(rng, max(length - len(head), 0))
        return " ".join(head) + (" " + tail if tail else "")

    def request(self, index: int) -> RequestSpec:
        prefix = self.prefix(self.group_of(index))
        rng = session_rng(self.spec.seed, index)
        suffix_words = self.spec.suffix_tokens.draw(rng)
        max_tokens = self.spec.max_tokens.draw(rng)
        planned = word_count(prefix) + suffix_words
        if self.tokens is not None:
            suffix_count = max(1, suffix_words - self.tokens.overhead)
            suffix = self.tokens.random_words(rng, suffix_count, lead=False)
            return RequestSpec.single(prefix + " " + suffix, max_tokens, planned)
        prompt = prefix + " " + random_words(rng, suffix_words)
        return RequestSpec.single(prompt, max_tokens, planned)

    def session(self, index: int) -> SingleRequest:
        return SingleRequest(self.request(index))


class Conversation:
    """One multi-turn session: every turn sends the history so far plus new user text."""

    __slots__ = ("_index", "_messages", "_planned", "_rng", "_spec", "_tokens", "_turn", "turns")

    def __init__(
        self, spec: MultiTurnWorkload, index: int, tokens: TokenTable | None = None
    ) -> None:
        self._spec = spec
        self._tokens = tokens
        self._index = index
        self._rng = session_rng(spec.seed, index)
        self.turns = spec.turns.draw(self._rng)
        self._messages: Messages = ()
        self._planned = 0
        self._turn = 0

    def next_request(self, last_reply: str | None) -> RequestSpec | None:
        if self._turn >= self.turns:
            return None
        if self._turn > 0:
            if last_reply is None:  # the last turn failed: no answer to build on
                self._turn = self.turns
                return None
            self._messages += (("assistant", last_reply),)
            self._planned += word_count(last_reply)
        words = self._spec.prompt_tokens.draw(self._rng)
        max_tokens = self._spec.max_tokens.draw(self._rng)
        tokens = self._tokens
        text = tokens.random_words(self._rng, words) if tokens else random_words(self._rng, words)
        self._messages += (("user", text),)
        self._planned += words
        spec = RequestSpec(
            prompt=text,
            messages=self._messages,
            max_tokens=max_tokens,
            planned_prompt_tokens=self._planned,
            session=self._index,
            turn=self._turn,
            think_time_s=self._spec.think_time_s if self._turn else 0.0,
        )
        self._turn += 1
        return spec


class MultiTurn:
    """Session i is conversation i, with `turns` drawn from (seed, i)."""

    needs_reply_text = True

    def __init__(self, spec: MultiTurnWorkload) -> None:
        self.spec = spec
        self.tokens: TokenTable | None = None

    def use_tokens(self, table: TokenTable) -> None:
        """User turns of one-token words (the history's replies are the server's own text)."""
        self.tokens = table

    def session(self, index: int) -> Conversation:
        return Conversation(self.spec, index, self.tokens)
