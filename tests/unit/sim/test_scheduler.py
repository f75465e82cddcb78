"""The pure engine model: batching limits, chunked prefill, KV cache and preemption."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sim.scheduler import (
    FinishReason,
    RequestTooLongError,
    Scheduler,
    StepResult,
    effective_max_tokens,
)
from harness.sim.settings import SimSettings


def _settings(**overrides: object) -> SimSettings:
    return SimSettings.model_validate(overrides)


def _run_to_end(sched: Scheduler, max_steps: int = 10_000) -> list[StepResult]:
    steps: list[StepResult] = []
    while sched.has_work:
        assert len(steps) < max_steps, "scheduler made no progress"
        steps.append(sched.step())
    return steps


def test_batch_never_exceeds_max_num_seqs() -> None:
    sched = Scheduler(_settings(max_num_seqs=3))
    for i in range(10):
        sched.add(i, prompt_len=8, max_tokens=5)
    for result in _run_to_end(sched):
        assert result.num_seqs <= 3
        assert sched.num_running <= 3


def test_token_budget_is_shared_by_decodes_and_prefill() -> None:
    sched = Scheduler(_settings(max_num_batched_tokens=64))
    for i in range(4):
        sched.add(i, prompt_len=40, max_tokens=20)
    steps = _run_to_end(sched)
    assert all(r.num_prefill_tokens + r.num_decode_tokens <= 64 for r in steps)
    # The first step prefills 40 + 24 tokens; the second decodes one and prefills the rest.
    assert (steps[0].num_prefill_tokens, steps[0].num_decode_tokens) == (64, 0)
    assert steps[1].num_decode_tokens == 1
    assert steps[1].num_prefill_tokens == 16 + 40 + 7


def test_long_prompt_is_prefilled_in_chunks_and_first_token_ends_prefill() -> None:
    sched = Scheduler(_settings(max_num_batched_tokens=256))
    sched.add(0, prompt_len=1000, max_tokens=3)
    steps = _run_to_end(sched)
    assert [r.num_prefill_tokens for r in steps] == [256, 256, 256, 232, 0, 0]
    assert [len(r.tokens) for r in steps] == [0, 0, 0, 1, 1, 1]
    assert [t.position for r in steps for t in r.tokens] == [0, 1, 2]
    assert steps[-1].tokens[0].finish_reason is FinishReason.LENGTH


def test_full_kv_cache_preempts_the_newest_and_everything_finishes() -> None:
    # 8 blocks of 16 tokens; each sequence grows to 48 + 40 = 88 tokens (6 blocks).
    s = _settings(num_gpu_blocks_override=8, max_model_len=128)
    sched = Scheduler(s)
    sched.add(0, prompt_len=48, max_tokens=40)
    sched.add(1, prompt_len=48, max_tokens=40)
    tokens: dict[int, list[int]] = defaultdict(list)
    preempted: list[int] = []
    for result in _run_to_end(sched):
        assert 0 <= sched.free_blocks <= sched.total_blocks
        preempted += result.preempted
        for t in result.tokens:
            tokens[t.seq_id].append(t.position)
    assert preempted
    assert preempted[0] == 1  # the most recently admitted goes back to the queue
    assert sched.num_preemptions == len(preempted)
    assert tokens == {0: list(range(40)), 1: list(range(40))}
    assert sched.free_blocks == sched.total_blocks


def test_recompute_after_preemption_counts_as_prefill() -> None:
    sched = Scheduler(_settings(num_gpu_blocks_override=8, max_model_len=128))
    sched.add(0, prompt_len=48, max_tokens=40)
    sched.add(1, prompt_len=48, max_tokens=40)
    steps = _run_to_end(sched)
    first_preemption = next(i for i, r in enumerate(steps) if r.preempted)
    readmitted = next(
        r for r in steps[first_preemption + 1 :] if 1 in r.scheduled and r.num_prefill_tokens
    )
    assert readmitted.num_prefill_tokens > 48  # the prompt and the tokens generated so far


def test_step_duration_formula() -> None:
    s = _settings(
        step_base_s=0.01, per_seq_s=0.001, prefill_per_token_s=0.0001, max_num_batched_tokens=512
    )
    sched = Scheduler(s)
    sched.add(0, prompt_len=100, max_tokens=2)
    sched.add(1, prompt_len=50, max_tokens=2)
    prefill, decode = sched.step(), sched.step()
    assert prefill.duration_s == pytest.approx(0.01 + 2 * 0.001 + 150 * 0.0001)
    assert decode.duration_s == pytest.approx(0.01 + 2 * 0.001)
    assert (decode.num_prefill_tokens, decode.num_decode_tokens) == (0, 2)


def test_eos_stops_early_with_reason_stop() -> None:
    sched = Scheduler(_settings())
    sched.add(0, prompt_len=4, max_tokens=10, stop_after=3)
    tokens = [t for r in _run_to_end(sched) for t in r.tokens]
    assert [t.position for t in tokens] == [0, 1, 2]
    assert tokens[-1].finish_reason is FinishReason.STOP


def test_abort_frees_blocks_and_forgets_the_sequence() -> None:
    sched = Scheduler(_settings())
    sched.add(0, prompt_len=100, max_tokens=10)
    sched.add(1, prompt_len=10, max_tokens=10)
    sched.step()
    assert sched.abort(0)
    assert sched.abort(1)
    assert not sched.abort(1)
    assert not sched.has_work
    assert sched.free_blocks == sched.total_blocks


def test_effective_max_tokens_follows_vllm() -> None:
    assert effective_max_tokens(10, None, 100, 64) == 64
    assert effective_max_tokens(90, None, 100, 64) == 10  # the default is trimmed
    assert effective_max_tokens(10, 90, 100, 64) == 90
    with pytest.raises(RequestTooLongError, match="maximum context length is 100"):
        effective_max_tokens(100, None, 100, 64)
    with pytest.raises(RequestTooLongError, match="too large: 91"):
        effective_max_tokens(10, 91, 100, 64)


def test_add_refuses_what_can_never_run() -> None:
    sched = Scheduler(_settings(max_model_len=100))
    with pytest.raises(RequestTooLongError):
        sched.add(0, prompt_len=60, max_tokens=41)
    with pytest.raises(ValueError, match="at least one"):
        sched.add(0, prompt_len=0, max_tokens=1)
    sched.add(0, prompt_len=60, max_tokens=40)
    with pytest.raises(ValueError, match="already queued"):
        sched.add(0, prompt_len=1, max_tokens=1)


@st.composite
def _engines(draw: st.DrawFn) -> tuple[SimSettings, list[tuple[int, int, int]]]:
    """Small engines (so limits bind) and requests as (arrival step, prompt, max_tokens)."""
    block_size = draw(st.sampled_from([1, 4, 16]))
    max_model_len = draw(st.integers(8, 96))
    min_blocks = -(-max_model_len // block_size)
    s = _settings(
        max_num_seqs=draw(st.integers(1, 6)),
        max_num_batched_tokens=draw(st.integers(1, 80)),
        max_model_len=max_model_len,
        block_size=block_size,
        num_gpu_blocks_override=draw(st.integers(min_blocks, 3 * min_blocks)),
    )
    requests = []
    for _ in range(draw(st.integers(1, 12))):
        prompt = draw(st.integers(1, max_model_len - 1))
        out = draw(st.integers(1, max_model_len - prompt))
        requests.append((draw(st.integers(0, 30)), prompt, out))
    return s, requests


@settings(max_examples=150, deadline=None)
@given(_engines())
def test_invariants_hold_every_step_and_every_request_completes(
    case: tuple[SimSettings, list[tuple[int, int, int]]],
) -> None:
    s, requests = case
    sched = Scheduler(s)
    arrivals = sorted((step, i) for i, (step, _, _) in enumerate(requests))
    tokens: dict[int, list[int]] = defaultdict(list)
    reasons: dict[int, FinishReason] = {}
    step = 0
    while arrivals or sched.has_work:
        assert step < 20_000, "no progress"
        while arrivals and arrivals[0][0] <= step:
            _, i = arrivals.pop(0)
            sched.add(i, requests[i][1], requests[i][2])
        if sched.has_work:
            result = sched.step()
            assert result.num_seqs <= s.max_num_seqs
            assert sched.num_running <= s.max_num_seqs
            assert result.num_prefill_tokens + result.num_decode_tokens <= (
                s.max_num_batched_tokens
            )
            assert 0 <= sched.free_blocks <= sched.total_blocks
            assert len(set(result.scheduled)) == len(result.scheduled)
            for t in result.tokens:
                assert t.seq_id not in reasons
                tokens[t.seq_id].append(t.position)
                if t.finish_reason is not None:
                    reasons[t.seq_id] = t.finish_reason
        step += 1
    for i, (_, _, max_tokens) in enumerate(requests):
        assert tokens[i] == list(range(max_tokens))
        assert reasons[i] is FinishReason.LENGTH
    assert sched.free_blocks == sched.total_blocks
