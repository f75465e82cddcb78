"""ShareGPT and JSON-lines datasets: read once, filtered like vLLM, cycled in a seeded order."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import ConfigError
from harness.spec.scenario import load_scenario
from harness.workload.base import RequestSpec, Workload
from harness.workload.build import build_workload

LOAD = {"arrival": {"type": "poisson", "rate": 1}, "duration_s": 1}


def _words(n: int, word: str = "word") -> str:
    return " ".join([word] * n)


def build_from(scenario_dir: Path, workload: dict[str, Any]) -> Workload:
    scenario_dir.mkdir(parents=True, exist_ok=True)
    path = scenario_dir / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "load": LOAD, "workload": workload}))
    return build_workload(load_scenario(path).workload, scenario_dir, str(path))


def requests(workload: Workload, n: int) -> list[RequestSpec]:
    out = []
    for index in range(n):
        session = workload.session(index)
        spec = session.next_request(None)
        assert spec is not None
        assert session.next_request("answer") is None
        out.append(spec)
    return out


def _conv(ident: str, *turns: tuple[str, str]) -> dict[str, Any]:
    return {"id": ident, "conversations": [{"from": f, "value": v} for f, v in turns]}


# (prompt words, answer words) of the usable ones are all different, to recognise them.
GOOD = [
    _conv("a", ("human", _words(5, "alpha")), ("gpt", _words(9)), ("human", "more"),
          ("gpt", _words(300))),
    _conv("b", ("system", "be brief"), ("human", _words(6, "beta")), ("gpt", _words(10))),
    _conv("c", ("user", _words(7, "gamma")), ("assistant", _words(11))),
    _conv("d", ("human", _words(8, "delta")), ("gpt", _words(12))),
    _conv("e", ("human", _words(40, "eps")), ("gpt", _words(13))),
]  # fmt: skip
BAD = [
    _conv("one-turn", ("human", _words(9, "lonely"))),
    _conv("gpt-first", ("gpt", _words(9, "hello")), ("gpt", _words(9))),
    _conv("short-prompt", ("human", _words(3, "tiny")), ("gpt", _words(20))),
    _conv("short-answer", ("human", _words(9, "terse")), ("gpt", _words(3))),
    _conv("long-prompt", ("human", _words(61, "huge")), ("gpt", _words(5))),
    _conv("long-total", ("human", _words(50, "sum")), ("gpt", _words(51))),
    {"id": "no-conversations"},
    "not an object",
]  # fmt: skip
LIMITS = {"max_prompt_tokens": 60, "max_total_tokens": 100}


@pytest.fixture
def sharegpt(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "sg.json"
    path.parent.mkdir()
    path.write_text(json.dumps(GOOD + BAD))
    return path


def _first_word(spec: RequestSpec) -> str:
    return spec.prompt.split()[0]


def test_sharegpt_takes_first_human_turn_and_its_answer_length(sharegpt: Path) -> None:
    wl = build_from(
        sharegpt.parent.parent / "sc", {"type": "sharegpt", "path": "../data/sg.json", **LIMITS}
    )
    specs = requests(wl, 5 * 4)
    expected = {"alpha": (5, 9), "beta": (6, 10), "gamma": (7, 11), "delta": (8, 12),
                "eps": (40, 13)}  # fmt: skip
    for spec in specs:
        assert (spec.planned_prompt_tokens, spec.max_tokens) == expected[_first_word(spec)]
        assert spec.messages == (("user", spec.prompt),)
    # Cycled: every usable conversation once per pass, the same order each pass.
    order = [_first_word(s) for s in specs]
    assert sorted(order[:5]) == sorted(expected)
    assert order == order[:5] * 4
    assert Counter(order) == dict.fromkeys(expected, 4)


def test_sharegpt_order_is_seeded(sharegpt: Path) -> None:
    spec = {"type": "sharegpt", "path": str(sharegpt), **LIMITS}
    orders = {
        seed: [_first_word(s) for s in requests(build_from(sharegpt.parent, {**spec,
                                                                              "seed": seed}), 5)]
        for seed in range(6)
    }  # fmt: skip
    again = [_first_word(s) for s in requests(build_from(sharegpt.parent, {**spec, "seed": 0}), 5)]
    assert again == orders[0]
    assert len({tuple(o) for o in orders.values()}) > 1


def test_sharegpt_max_tokens_overrides_answer_length(sharegpt: Path) -> None:
    wl = build_from(sharegpt.parent, {"type": "sharegpt", "path": "sg.json", "max_tokens": 7,
                                      **LIMITS})  # fmt: skip
    specs = requests(wl, 20)
    assert {s.max_tokens for s in specs} == {7}
    # As vLLM: a short dataset answer no longer matters when the output length is given.
    assert "terse" in {_first_word(s) for s in specs}
    assert "sum" in {_first_word(s) for s in specs}  # 50 + 7 fits the total now


def test_sharegpt_max_tokens_distribution_is_drawn_per_request(sharegpt: Path) -> None:
    dist = {"type": "uniform", "min": 20, "max": 30}
    wl = build_from(sharegpt.parent, {"type": "sharegpt", "path": "sg.json", "max_tokens": dist})
    outs = [s.max_tokens for s in requests(wl, 300)]
    assert set(outs) == set(range(20, 31))


def test_sharegpt_default_limits_are_vllms(sharegpt: Path) -> None:
    wl = build_from(sharegpt.parent, {"type": "sharegpt", "path": "sg.json"})
    firsts = {_first_word(s) for s in requests(wl, 40)}
    assert firsts == {"alpha", "beta", "gamma", "delta", "eps", "huge", "sum"}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('[{"id": "a", "conversations": [}', "not valid JSON at line 1, column 32"),
        ('{"id": "a"}', "expected a JSON list"),
        (json.dumps(BAD), "8 entries, 4 with both turns, none within the limits"),
    ],
)
def test_sharegpt_bad_files(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "sg.json").write_text(content)
    with pytest.raises(ConfigError) as info:
        build_from(tmp_path, {"type": "sharegpt", "path": "sg.json", **LIMITS})
    [(where, what)] = info.value.problems
    assert where == "workload.path"
    assert str(tmp_path / "sg.json") in what
    assert fragment in what


JSONL: list[dict[str, Any]] = [
    {"text": "first prompt here", "n": 5, "other": 1},
    {"text": "second one", "n": 6},
    {"text": "the third prompt of the file", "n": 7},
]


def _write_jsonl(path: Path, rows: list[Any], blank_after: int = 1) -> Path:
    lines = [json.dumps(r) for r in rows]
    lines.insert(blank_after, "   ")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_reads_field_and_output_length_and_cycles(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "p.jsonl", JSONL)
    wl = build_from(tmp_path, {"type": "jsonl", "path": "p.jsonl", "field": "text",
                               "max_tokens_field": "n", "seed": 2})  # fmt: skip
    specs = requests(wl, 9)
    by_text = {r["text"]: r["n"] for r in JSONL}
    for spec in specs:
        assert spec.max_tokens == by_text[spec.prompt]
        assert spec.planned_prompt_tokens == len(spec.prompt.split())
    assert sorted(s.prompt for s in specs[:3]) == sorted(by_text)
    assert [s.prompt for s in specs] == [s.prompt for s in specs[:3]] * 3


def test_jsonl_without_length_field_uses_max_tokens(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "p.jsonl", [{"prompt": r["text"]} for r in JSONL])
    wl = build_from(tmp_path, {"type": "jsonl", "path": str(tmp_path / "p.jsonl"),
                               "max_tokens": {"type": "uniform", "min": 1, "max": 4}})  # fmt: skip
    specs = requests(wl, 200)
    assert {s.max_tokens for s in specs} == {1, 2, 3, 4}
    again = requests(build_from(tmp_path, {"type": "jsonl", "path": "p.jsonl",
                                           "max_tokens": {"type": "uniform", "min": 1,
                                                          "max": 4}}), 200)  # fmt: skip
    assert again == specs


@pytest.mark.parametrize(
    ("rows", "where", "fragment"),
    [
        ([*JSONL[:2], "{not json"], "workload.path", "line 4: not valid JSON"),
        ([*JSONL[:2], [1, 2]], "workload.path", "line 4: expected a JSON object"),
        ([JSONL[0], {"prompt": "x", "n": 3}], "workload.field", "line 3: expected non-empty text"),
        ([JSONL[0], {"text": "  ", "n": 3}], "workload.field", "line 3: expected non-empty"),
        ([JSONL[0], {"text": "x"}], "workload.max_tokens_field", "line 3: expected a whole number"),
        ([JSONL[0], {"text": "x", "n": 0}], "workload.max_tokens_field", "(got 0)"),
        ([JSONL[0], {"text": "x", "n": True}], "workload.max_tokens_field", "(got True)"),
        ([], "workload.path", "found no lines"),
    ],
)
def test_jsonl_bad_lines_are_named(
    tmp_path: Path, rows: list[Any], where: str, fragment: str
) -> None:
    path = tmp_path / "p.jsonl"
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(["", *lines]) + "\n")  # a blank first line still counts as line 1
    with pytest.raises(ConfigError) as info:
        build_from(tmp_path, {"type": "jsonl", "path": "p.jsonl", "field": "text",
                              "max_tokens_field": "n"})  # fmt: skip
    [(w, what)] = info.value.problems
    assert w == where
    assert fragment in what
    assert str(path) in what
