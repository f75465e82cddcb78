"""Shared-prefix groups and multi-turn conversations, checked on the text they produce."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.spec.scenario import load_scenario
from harness.spec.vocabulary import VOCABULARY
from harness.workload.base import RequestSpec, Workload
from harness.workload.build import build_workload
from harness.workload.generated import SharedPrefix
from harness.workload.text import word_count

LOAD = {"arrival": {"type": "poisson", "rate": 1}, "duration_s": 1}


def build(tmp_path: Path, workload: dict[str, Any]) -> Workload:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "load": LOAD, "workload": workload}))
    return build_workload(load_scenario(path).workload, tmp_path, str(path))


def single(workload: Workload, n: int) -> list[RequestSpec]:
    out = []
    for index in range(n):
        spec = workload.session(index).next_request(None)
        assert spec is not None
        out.append(spec)
    return out


PREFIX = {"type": "shared_prefix", "num_prefixes": 5, "prefix_tokens": 40, "suffix_tokens": 12,
          "max_tokens": 9}  # fmt: skip


def test_shared_prefix_groups_share_the_exact_prefix_and_differ_after(tmp_path: Path) -> None:
    wl = build(tmp_path, PREFIX)
    assert isinstance(wl, SharedPrefix)
    specs = single(wl, 200)
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for index, spec in enumerate(specs):
        words = spec.prompt.split()
        assert len(words) == spec.planned_prompt_tokens == 52
        assert spec.max_tokens == 9
        prefix = " ".join(words[:40])
        assert spec.prompt.startswith(wl.prefix(wl.group_of(index)) + " ")
        assert prefix == wl.prefix(wl.group_of(index))
        by_prefix[prefix].append(" ".join(words[40:]))
    assert len(by_prefix) == 5
    for suffixes in by_prefix.values():
        assert len(set(suffixes)) == len(suffixes) == 40  # every group equally used


def test_shared_prefix_uses_every_group_once_a_block_in_shuffled_order(tmp_path: Path) -> None:
    wl = build(tmp_path, {**PREFIX, "num_prefixes": 8})
    assert isinstance(wl, SharedPrefix)
    blocks = [tuple(wl.group_of(b * 8 + i) for i in range(8)) for b in range(20)]
    assert all(sorted(block) == list(range(8)) for block in blocks)
    assert len(set(blocks)) > 10  # not one cyclic order repeated


@pytest.mark.parametrize(("num", "words"), [(len(VOCABULARY), 1), (len(VOCABULARY) + 1, 2)])
def test_shared_prefixes_are_distinct_even_when_as_short_as_allowed(
    tmp_path: Path, num: int, words: int
) -> None:
    wl = build(tmp_path, {**PREFIX, "num_prefixes": num, "prefix_tokens": words})
    assert isinstance(wl, SharedPrefix)
    prefixes = {wl.prefix(g) for g in range(num)}
    assert len(prefixes) == num
    assert {word_count(p) for p in prefixes} == {words}


def test_shared_prefix_length_is_drawn_once_per_group(tmp_path: Path) -> None:
    dist = {"type": "uniform", "min": 20, "max": 60}
    wl = build(tmp_path, {**PREFIX, "num_prefixes": 30, "prefix_tokens": dist,
                          "suffix_tokens": {"type": "uniform", "min": 1, "max": 5}})  # fmt: skip
    assert isinstance(wl, SharedPrefix)
    lengths = {g: word_count(wl.prefix(g)) for g in range(30)}
    assert len(set(lengths.values())) > 5
    for index, spec in enumerate(single(wl, 300)):
        prefix_len = lengths[wl.group_of(index)]
        assert 1 <= spec.planned_prompt_tokens - prefix_len <= 5
        assert word_count(spec.prompt) == spec.planned_prompt_tokens


def test_shared_prefix_is_seeded(tmp_path: Path) -> None:
    a = single(build(tmp_path, {**PREFIX, "seed": 1}), 30)
    assert single(build(tmp_path, {**PREFIX, "seed": 1}), 30) == a
    b = single(build(tmp_path, {**PREFIX, "seed": 2}), 30)
    assert {s.prompt.split()[0:40] == t.prompt.split()[0:40] for s, t in zip(a, b, strict=True)} \
        == {False}  # fmt: skip


TURNS = {"type": "multi_turn", "turns": 4, "prompt_tokens": 6, "max_tokens": 5,
         "think_time_s": 1.5}  # fmt: skip


def _converse(workload: Workload, index: int, fail_at: int | None = None) -> list[RequestSpec]:
    session = workload.session(index)
    out: list[RequestSpec] = []
    reply: str | None = None
    while (spec := session.next_request(reply)) is not None:
        out.append(spec)
        reply = None if spec.turn == fail_at else f"answer {index} {spec.turn} is here"
        assert len(out) < 100
    return out


def test_multi_turn_resends_the_growing_history(tmp_path: Path) -> None:
    wl = build(tmp_path, TURNS)
    assert wl.needs_reply_text
    turns = _converse(wl, 7)
    assert [t.turn for t in turns] == [0, 1, 2, 3]
    users = [t.prompt for t in turns]
    for k, spec in enumerate(turns):
        expected: list[tuple[str, str]] = []
        for j in range(k):
            expected += [("user", users[j]), ("assistant", f"answer 7 {j} is here")]
        expected.append(("user", users[k]))
        assert list(spec.messages) == expected
        assert word_count(spec.prompt) == 6
        assert spec.planned_prompt_tokens == sum(word_count(c) for _, c in spec.messages)
        assert spec.max_tokens == 5
        assert spec.session == 7
        assert spec.think_time_s == (0.0 if k == 0 else 1.5)
    assert len(set(users)) == 4


def test_multi_turn_draws_the_number_of_turns_per_session(tmp_path: Path) -> None:
    wl = build(tmp_path, {**TURNS, "turns": {"type": "uniform", "min": 1, "max": 6}})
    counts = [len(_converse(wl, i)) for i in range(300)]
    assert set(counts) == {1, 2, 3, 4, 5, 6}
    assert counts == [len(_converse(wl, i)) for i in range(300)]  # per-session, reproducible


def test_failed_turn_ends_the_conversation(tmp_path: Path) -> None:
    wl = build(tmp_path, TURNS)
    assert [t.turn for t in _converse(wl, 0, fail_at=1)] == [0, 1]
    assert [t.turn for t in _converse(wl, 0, fail_at=3)] == [0, 1, 2, 3]


def test_multi_turn_is_seeded(tmp_path: Path) -> None:
    dist = {"type": "uniform", "min": 2, "max": 20}
    spec = {**TURNS, "turns": {"type": "uniform", "min": 1, "max": 5}, "prompt_tokens": dist}
    a = [_converse(build(tmp_path, {**spec, "seed": 9}), i) for i in range(20)]
    b = [_converse(build(tmp_path, {**spec, "seed": 9}), i) for i in range(20)]
    c = [_converse(build(tmp_path, {**spec, "seed": 10}), i) for i in range(20)]
    assert a == b
    assert [[t.prompt for t in s] for s in a] != [[t.prompt for t in s] for s in c]
