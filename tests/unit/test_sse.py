"""SSE line handling: which lines carry content, usage, and how broken streams are classified."""

from __future__ import annotations

import json

from harness.records import ErrorClass
from harness.sse import StreamState, parse_completion


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
    assert parse_completion(json.dumps(body).encode()) == (3, 1, True, "")
    assert parse_completion(b'{"choices":[{"text":"x"}]}') == (None, None, True, "")
    assert parse_completion(b"oops")[2] is False
    assert parse_completion(b'{"choices":[]}')[3] == "no choices in body"
