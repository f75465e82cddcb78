"""SSE line handling: which lines carry content, usage, and how broken streams are classified."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import content_chunk_objects, mangled, sse_chunk_objects, sse_lines

from harness.load import sse
from harness.load.sse import StreamState, parse_completion_text
from harness.records.record import ErrorClass


def _chat(content: str | None, **extra: object) -> bytes:
    delta = {} if content is None else {"content": content}
    obj = {"choices": [{"index": 0, "delta": delta, "finish_reason": None}], **extra}
    return b"data: " + json.dumps(obj).encode() + b"\n"


def test_chat_stream_times_only_content_chunks() -> None:
    s = StreamState()
    s.feed(b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n', 1.0)
    s.feed(b"\n", 1.05)
    s.feed(_chat("Hello"), 1.1)
    s.feed(b": keep-alive\n", 1.15)
    s.feed(_chat(" world"), 1.2)
    s.feed(b'data: {"choices":[{"delta":{},"finish_reason":"length"}]}\n', 1.3)
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    s.feed(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n", 1.4)
    s.feed(b"data: [DONE]\n", 1.5)
    s.finish()
    assert s.error is None
    assert s.chunk_times == [1.1, 1.2]
    assert (s.prompt_tokens, s.output_tokens) == (7, 2)
    assert s.finish_reason == "length"


def test_completions_and_reasoning_count_as_content() -> None:
    s = StreamState()
    s.feed(b'data: {"choices":[{"text":"a"}]}', 1.0)
    s.feed(b'data:{"choices":[{"delta":{"reasoning_content":"hm"}}]}', 2.0)
    s.feed(b'data: {"choices":[{"text":""}]}', 3.0)
    s.feed(b"data: [DONE]", 4.0)
    s.finish()
    assert s.chunk_times == [1.0, 2.0]
    assert s.error is None


def test_malformed_chunk() -> None:
    s = StreamState()
    s.feed(_chat("a"), 1.0)
    s.feed(b"data: {not json\n", 2.0)
    assert s.error is ErrorClass.MALFORMED_CHUNK
    s.finish()
    assert s.error is ErrorClass.MALFORMED_CHUNK


def test_missing_done_is_incomplete() -> None:
    s = StreamState()
    s.feed(_chat("a"), 1.0)
    s.finish()
    assert s.error is ErrorClass.INCOMPLETE


def test_empty_stream_is_incomplete() -> None:
    s = StreamState()
    s.feed(b"data: [DONE]\n", 1.0)
    s.finish()
    assert s.error is ErrorClass.INCOMPLETE
    assert "no generated content" in s.error_detail


def test_error_object_mid_stream() -> None:
    s = StreamState()
    s.feed(_chat("a"), 1.0)
    s.feed(b'data: {"error": {"message": "engine dead", "code": 500}}\n', 2.0)
    assert s.error is ErrorClass.BROKEN_STREAM
    assert "engine dead" in s.error_detail


def test_non_streaming_bodies() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 1}
    body = {"choices": [{"message": {"content": "hi"}}], "usage": usage}
    assert parse_completion_text(json.dumps(body).encode())[:2] == (3, 1)
    assert parse_completion_text(b'{"choices":[{"text":"x"}]}') == (None, None, "x", "", None)
    assert parse_completion_text(b"oops")[2] is None
    assert parse_completion_text(b'{"choices":[]}')[3] == "no choices in body"
    named = parse_completion_text(b'{"model":"fallback","choices":[{"text":"x"}]}')
    assert named.model == "fallback"


# --- The fast path: lines of a shape already parsed once skip json.loads --------------


def _reference(lines: list[bytes]) -> tuple[list[int], int | None, str | None, object, str]:
    """The plain reading of the protocol, a json.loads per data line, nothing skipped:
    (indices of content lines, prompt tokens, finish reason, error class, answer text)."""
    times: list[int] = []
    prompt = reason = error = None
    text = ""
    for i, line in enumerate(lines):
        raw = line.strip()
        if not raw.startswith(b"data:") or raw[5:].strip() == b"[DONE]":
            continue
        try:
            obj = json.loads(raw[5:].strip())
        except ValueError:
            return times, prompt, reason, ErrorClass.MALFORMED_CHUNK, text
        if not isinstance(obj, dict):
            return times, prompt, reason, ErrorClass.MALFORMED_CHUNK, text
        if obj.get("error"):
            return times, prompt, reason, ErrorClass.BROKEN_STREAM, text
        usage = obj.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            prompt = usage["prompt_tokens"]
        choices = obj.get("choices")
        if not isinstance(choices, list):
            if usage is None:
                return times, prompt, reason, ErrorClass.MALFORMED_CHUNK, text
            continue
        if any(not isinstance(c, dict) for c in choices):
            return times, prompt, reason, ErrorClass.MALFORMED_CHUNK, text
        for c in choices:
            d = c.get("delta")
            parts = (
                [d.get(k) for k in ("content", "reasoning_content", "reasoning")]
                if (isinstance(d, dict))
                else [c.get("text")]
            )
            if any(isinstance(p, str) and p for p in parts):
                times.append(i)
                answer = d.get("content") if isinstance(d, dict) else c.get("text")
                text += answer if isinstance(answer, str) else ""
                break
        for c in choices:
            reason = str(c["finish_reason"]) if c.get("finish_reason") else reason
    return times, prompt, reason, error, text


def _harness(lines: list[bytes]) -> tuple[list[int], int | None, str | None, object, str]:
    state = StreamState(collect_text=True)
    for i, line in enumerate(lines):
        state.feed(line, float(i))
        if state.error is not None:
            break
    times = [int(t) for t in state.chunk_times]
    text = "".join(state.text_parts)
    return times, state.prompt_tokens, state.finish_reason, state.error, text


def _vllm_line(request: int, token: str, t_send: float, reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": {"content": token}, "logprobs": None, "finish_reason": reason}
    obj = {
        "id": f"chatcmpl-{request}",
        "object": "chat.completion.chunk",
        "created": 1764201600,
        "model": "m",
        "choices": [choice],
        "t_send": t_send,
    }
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@contextlib.contextmanager
def _no_shapes_learnt() -> Iterator[None]:
    """Each test (each hypothesis example) starts with an empty process-wide registry."""
    saved, learnt = list(sse._SHAPES), sse._derived
    sse._SHAPES.clear()
    sse._derived = 0
    try:
        yield
    finally:
        sse._SHAPES[:] = saved
        sse._derived = learnt


def test_repeated_shapes_skip_the_parse_and_read_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    parses = 0
    loads = json.loads

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal parses
        parses += 1
        return loads(*args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)
    with _no_shapes_learnt():
        _three_streams()
    assert parses == 4  # the run's first content line, and each stream's finish line


def _three_streams() -> None:
    for request in range(3):
        lines = [_vllm_line(request, f" w{k}é", 100.0 + k / 7) for k in range(20)]
        lines += [_vllm_line(request, "", 101.0, "length"), b"", b"data: [DONE]"]
        state = StreamState(collect_text=True)
        for k, line in enumerate(lines):
            state.feed(line, float(k))
        state.finish()
        assert state.error is None
        assert state.chunk_times == [float(k) for k in range(20)]
        assert "".join(state.text_parts) == "".join(f" w{k}é" for k in range(20))
        assert state.finish_reason == "length"


def test_a_shape_never_hides_a_malformed_or_unusual_line() -> None:
    good = _vllm_line(7, "x", 1.0)
    bad = [
        good[:-1],  # truncated
        good.replace(b'"x"', b'"x\\q"'),  # invalid escape
        good.replace(b'"x"', b'"x\x01"'),  # raw control character
        good.replace(b'"x"', b'"x\xff"'),  # not UTF-8
        good.replace(b'"x"', b'""'),  # empty content
        good.replace(b"null}", b'"stop"}'),  # finish reason
        good.replace(b'"t_send"', b'"error":{"message":"boom"},"t_send"'),
        good.replace(b'"model"', b'"usage":{"prompt_tokens":3},"model"'),
        good.replace(b"1764201600", b"NaN"),
    ]
    for line in bad:
        with _no_shapes_learnt():
            assert _harness([good, good, line]) == _reference([good, good, line]), line


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_fast_path_agrees_with_a_full_parse(data: st.DataObject) -> None:
    base = data.draw(content_chunk_objects() | sse_chunk_objects())
    style = data.draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    lines = []
    for _ in range(data.draw(st.integers(min_value=1, max_value=6))):
        obj = _vary(data, base) if data.draw(st.integers(0, 3)) else data.draw(sse_chunk_objects())
        line = data.draw(sse_lines(obj, style if data.draw(st.integers(0, 5)) else None))
        lines.append(data.draw(mangled(line)) if data.draw(st.integers(0, 5)) == 0 else line)
    lines.append(data.draw(st.sampled_from([b"", b": ping", b"data: [DONE]", b"event: x"])))
    with _no_shapes_learnt():
        assert _harness(lines) == _reference(lines)


def _vary(data: st.DataObject, base: dict[str, Any]) -> dict[str, Any]:
    """base with new values where servers vary them from chunk to chunk."""
    obj: dict[str, Any] = json.loads(json.dumps(base))
    for key in ("created", "t_send"):
        if key in obj:
            obj[key] = data.draw(st.integers(min_value=0, max_value=10**10) | st.floats(0, 1e9))
    for choice in obj["choices"]:
        if isinstance(choice, dict):
            target: dict[str, Any] = choice.get("delta", choice)
            for key in ("content", "reasoning_content", "text"):
                if isinstance(target.get(key), str) and target[key]:
                    target[key] = data.draw(st.text(max_size=5))
    return obj
