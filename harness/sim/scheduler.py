"""The engine model: vLLM V1's scheduling of one GPU, with no clock and no I/O.

Every sequence is prompt tokens plus the output tokens generated so far. A step
computes some of each scheduled sequence's missing tokens; a sequence whose tokens
are all computed samples one new output token. That one rule covers chunked prefill
(several steps of up to the token budget), the first token coming from the step that
completes the prompt, decoding (one token to compute each step) and recompute after
preemption (everything to compute again), as in vLLM's V1 scheduler.

Each step serves running sequences in admission order first, then admits waiting
ones first come, first served, while the token budget, ``max_num_seqs`` and free
KV-cache blocks allow. When a running sequence cannot get the blocks it needs, the
most recently admitted running sequence is preempted: its blocks are freed and it goes
back to the front of the waiting queue.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from harness.sim.settings import SimSettings


class FinishReason(StrEnum):
    """Why a sequence ended, as vLLM reports it."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


class RequestTooLongError(ValueError):
    """The prompt and its output do not fit ``max_model_len`` (vLLM answers 400)."""


class Token(NamedTuple):
    """One output token produced by a step: its sequence, its position, and the
    finish reason when it is the sequence's last. A tuple: steps make many of these."""

    seq_id: int
    position: int
    finish_reason: FinishReason | None


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step did, and how long the simulated GPU takes for it."""

    duration_s: float
    num_seqs: int
    """Sequences in the batch."""
    num_prefill_tokens: int
    num_decode_tokens: int
    scheduled: tuple[int, ...]
    """Ids of the batch's sequences, in scheduling order."""
    tokens: tuple[Token, ...]
    preempted: tuple[int, ...]


@dataclass(slots=True, eq=False)
class _Seq:
    seq_id: int
    prompt_len: int
    target_len: int
    reason_at_target: FinishReason
    num_output: int = 0
    num_computed: int = 0
    num_blocks: int = 0

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + self.num_output


def effective_max_tokens(
    prompt_len: int, max_tokens: int | None, max_model_len: int, default: int
) -> int:
    """Output tokens a request may generate, or RequestTooLongError with vLLM's wording.

    An explicit ``max_tokens`` that overflows the context is refused; the default is
    trimmed to what is left, since the client asked for nothing in particular.
    """
    if prompt_len >= max_model_len:
        raise RequestTooLongError(
            f"This model's maximum context length is {max_model_len} tokens. However, "
            f"your request has {prompt_len} input tokens. Please reduce the length of "
            "the input messages."
        )
    room = max_model_len - prompt_len
    if max_tokens is None:
        return min(default, room)
    if max_tokens > room:
        raise RequestTooLongError(
            f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This "
            f"model's maximum context length is {max_model_len} tokens and your request "
            f"has {prompt_len} input tokens ({max_tokens} > {max_model_len} - {prompt_len})."
        )
    return max_tokens


@dataclass(slots=True)
class Scheduler:
    """Waiting queue, running batch and KV-cache blocks of one simulated engine."""

    settings: SimSettings
    total_blocks: int = field(init=False)
    free_blocks: int = field(init=False)
    num_preemptions: int = field(default=0, init=False)
    _waiting: deque[_Seq] = field(default_factory=deque, init=False)
    _running: list[_Seq] = field(default_factory=list, init=False)
    _seqs: dict[int, _Seq] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.total_blocks = self.settings.num_kv_blocks
        self.free_blocks = self.total_blocks

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def has_work(self) -> bool:
        return bool(self._seqs)

    @property
    def kv_cache_usage(self) -> float:
        """Share of KV-cache blocks in use, 0 to 1."""
        return 1.0 - self.free_blocks / self.total_blocks

    def add(
        self, seq_id: int, prompt_len: int, max_tokens: int, stop_after: int | None = None
    ) -> None:
        """Queue a sequence that generates ``max_tokens`` tokens, or stops with
        finish_reason "stop" after ``stop_after`` tokens when that comes first (EOS)."""
        if seq_id in self._seqs:
            raise ValueError(f"sequence {seq_id} already queued")
        if prompt_len < 1 or max_tokens < 1:
            raise ValueError("a sequence needs at least one prompt and one output token")
        if prompt_len + max_tokens > self.settings.max_model_len:
            raise RequestTooLongError(f"sequence {seq_id} exceeds max_model_len")
        if stop_after is not None and stop_after < max_tokens:
            seq = _Seq(seq_id, prompt_len, max(stop_after, 1), FinishReason.STOP)
        else:
            seq = _Seq(seq_id, prompt_len, max_tokens, FinishReason.LENGTH)
        self._seqs[seq_id] = seq
        self._waiting.append(seq)

    def abort(self, seq_id: int) -> bool:
        """Drop a sequence wherever it is (the client went away); False if unknown."""
        seq = self._seqs.pop(seq_id, None)
        if seq is None:
            return False
        if seq in self._running:
            self._running.remove(seq)
        else:
            self._waiting.remove(seq)
        self._free(seq)
        return True

    def step(self) -> StepResult:
        """Schedule one batch, run it, and return what it produced."""
        s = self.settings
        budget = s.max_num_batched_tokens
        batch: list[tuple[_Seq, int]] = []
        preempted: list[int] = []

        i = 0
        while i < len(self._running) and budget > 0:
            seq = self._running[i]
            n = min(seq.num_tokens - seq.num_computed, budget)
            while not self._allocate(seq, seq.num_computed + n):
                victim = self._running.pop()
                self._preempt(victim)
                preempted.append(victim.seq_id)
                if victim is seq:
                    break
            else:
                batch.append((seq, n))
                budget -= n
                i += 1
                continue
            break

        # Like vLLM, admit nothing in a step that had to preempt: memory is short.
        while not preempted and self._waiting and budget > 0:
            if len(self._running) >= s.max_num_seqs:
                break
            seq = self._waiting[0]
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._allocate(seq, seq.num_computed + n):
                break
            self._waiting.popleft()
            self._running.append(seq)
            batch.append((seq, n))
            budget -= n

        return self._execute(batch, tuple(preempted))

    def _execute(self, batch: list[tuple[_Seq, int]], preempted: tuple[int, ...]) -> StepResult:
        s = self.settings
        tokens: list[Token] = []
        num_decode = 0
        num_prefill = 0
        finished = False
        for seq, n in batch:
            if seq.num_output > 0 and seq.num_tokens - seq.num_computed == 1:
                num_decode += 1
            else:
                num_prefill += n
            seq.num_computed += n
            if seq.num_computed < seq.num_tokens:
                continue  # a prefill chunk that leaves part of the prompt for later
            seq.num_output += 1
            done = seq.num_output >= seq.target_len
            tokens.append(
                Token(seq.seq_id, seq.num_output - 1, seq.reason_at_target if done else None)
            )
            if done:
                finished = True
                del self._seqs[seq.seq_id]
                self._free(seq)
        if finished:
            self._running = [seq for seq in self._running if seq.seq_id in self._seqs]
        duration = s.step_base_s + s.per_seq_s * len(batch) + s.prefill_per_token_s * num_prefill
        return StepResult(
            duration_s=duration,
            num_seqs=len(batch),
            num_prefill_tokens=num_prefill,
            num_decode_tokens=num_decode,
            scheduled=tuple(seq.seq_id for seq, _ in batch),
            tokens=tuple(tokens),
            preempted=preempted,
        )

    def _allocate(self, seq: _Seq, num_tokens: int) -> bool:
        need = -(-num_tokens // self.settings.block_size) - seq.num_blocks
        if need > self.free_blocks:
            return False
        if need > 0:
            seq.num_blocks += need
            self.free_blocks -= need
        return True

    def _preempt(self, seq: _Seq) -> None:
        self._free(seq)
        seq.num_computed = 0
        self._waiting.appendleft(seq)
        self.num_preemptions += 1

    def _free(self, seq: _Seq) -> None:
        self.free_blocks += seq.num_blocks
        seq.num_blocks = 0
