"""Reading an OpenAI streaming response one SSE line at a time, with per-line timestamps.

Pure: the caller reads the lines (and stamps each with time.monotonic() as it arrives);
this module decides which lines carry generated content, collects usage and classifies
what went wrong. vLLM, LiteLLM, llama.cpp and OpenAI all speak this dialect.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness.records import ErrorClass

DONE = "[DONE]"


@dataclass(slots=True)
class StreamState:
    """What a stream has shown so far; `error` set means stop reading."""

    chunk_times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    done: bool = False
    error: ErrorClass | None = None
    error_detail: str = ""
    finish_reason: str | None = None
    collect_text: bool = False  # keep the generated text (multi-turn workloads resend it)
    text_parts: list[str] = field(default_factory=list)

    def feed(self, line: bytes, t: float) -> None:
        """Take one raw line (with or without its newline) that arrived at monotonic time t."""
        text = line.strip()
        if not text or text.startswith(b":"):
            return  # blank separator or SSE comment (keep-alive)
        if not text.startswith(b"data:"):
            return  # "event:", "id:", "retry:" fields carry nothing we measure
        payload = text[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            obj = json.loads(payload)
        except ValueError:
            self._fail(ErrorClass.MALFORMED_CHUNK, f"not JSON: {payload[:80]!r}")
            return
        if not isinstance(obj, dict):
            self._fail(ErrorClass.MALFORMED_CHUNK, f"not a JSON object: {payload[:80]!r}")
            return
        if obj.get("error"):
            self._fail(ErrorClass.BROKEN_STREAM, f"server error in stream: {_short(obj['error'])}")
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._take_usage(usage)
        choices = obj.get("choices")
        if not isinstance(choices, list):
            if usage is None:
                self._fail(ErrorClass.MALFORMED_CHUNK, "chunk without choices or usage")
            return
        for choice in choices:
            if not isinstance(choice, dict):
                self._fail(ErrorClass.MALFORMED_CHUNK, "choice is not an object")
                return
            if _has_content(choice):
                self.chunk_times.append(t)
                if self.collect_text:
                    self.text_parts.append(_content(choice))
                break
        for choice in choices:
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = str(reason)

    def _take_usage(self, usage: dict[str, Any]) -> None:
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if isinstance(prompt, int):
            self.prompt_tokens = prompt
        if isinstance(completion, int):
            self.output_tokens = completion

    def _fail(self, kind: ErrorClass, detail: str) -> None:
        if self.error is None:
            self.error = kind
            self.error_detail = detail

    def finish(self) -> None:
        """Call at end of body: a stream that ends without [DONE] or content is incomplete."""
        if self.error is not None:
            return
        if not self.done:
            self._fail(ErrorClass.INCOMPLETE, "stream ended without data: [DONE]")
        elif not self.chunk_times:
            self._fail(ErrorClass.INCOMPLETE, "stream carried no generated content")


def _content(choice: dict[str, Any]) -> str:
    """The answer text of a chunk (reasoning excluded: it is not resent in a conversation)."""
    delta = choice.get("delta")
    value = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return value if isinstance(value, str) else ""


def _has_content(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        for key in ("content", "reasoning_content", "reasoning"):
            value = delta.get(key)
            if isinstance(value, str) and value:
                return True
        return False
    text = choice.get("text")
    return isinstance(text, str) and bool(text)


def parse_completion(body: bytes) -> tuple[int | None, int | None, bool, str]:
    """A non-streaming body: (prompt_tokens, output_tokens, has_content, problem)."""
    prompt, output, text, problem = parse_completion_text(body)
    return prompt, output, text is not None, problem


def parse_completion_text(body: bytes) -> tuple[int | None, int | None, str | None, str]:
    """A non-streaming body: (prompt_tokens, output_tokens, answer text or None, problem)."""
    try:
        obj = json.loads(body)
    except ValueError:
        return None, None, None, f"body is not JSON: {body[:80]!r}"
    if not isinstance(obj, dict):
        return None, None, None, "body is not a JSON object"
    prompt = output = None
    usage = obj.get("usage")
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        prompt = p if isinstance(p, int) else None
        output = c if isinstance(c, int) else None
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return prompt, output, None, "no choices in body"
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict):
        content = message.get("content") or message.get("reasoning_content")
    else:
        content = first.get("text")
    if isinstance(content, str) and content:
        return prompt, output, content, ""
    return prompt, output, None, "no generated content in body"


def _short(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("message", value)
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."
