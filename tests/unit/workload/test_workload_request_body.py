"""The JSON body built from a RequestSpec, for chat and completions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from harness.load.openai_api import request_body
from harness.spec.config import validate
from harness.spec.scenario import Scenario
from harness.workload.base import RequestSpec

SPEC = RequestSpec(
    prompt="and now this",
    messages=(("user", "hello there"), ("assistant", "hi you"), ("user", "and now this")),
    max_tokens=17,
    planned_prompt_tokens=7,
    session=3,
    turn=1,
)


def _scenario(api: str, stream: bool, **workload: Any) -> Scenario:
    data = {
        "name": "s",
        "target": {"api": api, "stream": stream},
        "workload": {"type": "multi_turn", **workload},
        "load": {"arrival": {"type": "poisson", "rate": 1}, "duration_s": 1},
    }
    return validate(Scenario, data, "s.yaml")


def test_chat_sends_the_whole_history() -> None:
    body = json.loads(request_body(_scenario("chat", True, temperature=0.5), "m", SPEC))
    assert body == {
        "model": "m",
        "max_tokens": 17,
        "temperature": 0.5,
        "stream": True,
        "messages": [
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "hi you"},
            {"role": "user", "content": "and now this"},
        ],
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.parametrize("ignore_eos", [True, False])
def test_completions_send_the_history_as_text(ignore_eos: bool) -> None:
    sc = _scenario("completions", False, ignore_eos=ignore_eos)
    body = json.loads(request_body(sc, "m", SPEC))
    assert body["prompt"] == "hello there\n\nhi you\n\nand now this"
    assert "messages" not in body
    assert "stream_options" not in body
    assert body["stream"] is False
    assert body["max_tokens"] == 17
    assert body.get("ignore_eos", False) is ignore_eos


def test_single_turn_completion_prompt_is_the_prompt() -> None:
    spec = RequestSpec.single("just this", 4)
    body = json.loads(request_body(_scenario("completions", True), "m", spec))
    assert body["prompt"] == "just this"
    assert spec.planned_prompt_tokens == 2
