"""What the driver asks a workload for: sessions of requests, each a fixed function of the seed.

A session is the unit of work the driver schedules: one request for single-turn workloads,
one conversation for multi-turn ones. Session `index` is deterministic in (seed, index), so
two runs of a scenario send the same requests whatever the timing or worker split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from harness.workload.text import word_count

Messages = tuple[tuple[str, str], ...]
"""(role, content) pairs of a chat request, oldest first."""


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request to send: its text, its output length and where it sits in a session."""

    prompt: str  # the new user text of this turn (the whole prompt for a single turn)
    messages: Messages  # the full chat history to send, ending with this turn's user text
    max_tokens: int
    planned_prompt_tokens: int  # words sent in all messages: the length the generator aimed at
    session: int | None = None  # conversation id (multi-turn), else None
    turn: int = 0  # 0-based turn within the session
    think_time_s: float = 0.0  # wait before sending this turn (multi-turn)

    @property
    def completion_prompt(self) -> str:
        """The text for /v1/completions: the history's contents joined by blank lines."""
        return "\n\n".join(content for _, content in self.messages)

    @classmethod
    def single(cls, prompt: str, max_tokens: int, planned: int | None = None) -> RequestSpec:
        """A one-message request; `planned` defaults to the prompt's word count."""
        return cls(
            prompt=prompt,
            messages=(("user", prompt),),
            max_tokens=max_tokens,
            planned_prompt_tokens=word_count(prompt) if planned is None else planned,
        )


class Session(Protocol):
    """One unit of work: call `next_request` until it returns None."""

    def next_request(self, last_reply: str | None) -> RequestSpec | None:
        """The next request, given the text of the answer to the previous one (None before the
        first, or when it failed; a failed turn ends a conversation)."""
        ...


class Workload(Protocol):
    """The runtime side of a `workload:` section, built once per run by build_workload."""

    @property
    def needs_reply_text(self) -> bool:
        """True when sessions need the answer text (the client must keep it: multi-turn)."""
        ...

    def session(self, index: int) -> Session:
        """The index-th session; the same (seed, index) always gives the same requests."""
        ...


class SingleRequest:
    """A session of exactly one request."""

    __slots__ = ("_spec",)

    def __init__(self, spec: RequestSpec) -> None:
        self._spec: RequestSpec | None = spec

    def next_request(self, last_reply: str | None) -> RequestSpec | None:
        del last_reply
        spec, self._spec = self._spec, None
        return spec


def session_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of session `index`: keyed by (seed, index), so prompts do not depend
    on timing or on how sessions are split across workers."""
    if index < 0:
        raise ValueError(f"session index must be 0 or more, got {index}")
    return np.random.default_rng((seed, index))


_AUX_BASE = 2**63
"""Auxiliary streams (dataset order, prefixes) are keyed far above any session index."""


def aux_rng(seed: int, purpose: int, *key: int) -> np.random.Generator:
    """A random stream for something other than a session, apart from every session's."""
    return np.random.default_rng((seed, _AUX_BASE + purpose, *key))
