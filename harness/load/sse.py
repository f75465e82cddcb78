"""Reading an OpenAI streaming response one SSE line at a time, with per-line timestamps.

Pure: the caller reads the lines (and stamps each with time.monotonic() as it arrives);
this module decides which lines carry generated content, collects usage and classifies
what went wrong. vLLM, LiteLLM, llama.cpp and OpenAI all speak this dialect.

It runs once per line of every stream on the load generator's one core, so the common line
skips json.loads: a content chunk whose shape (keys, nesting, everything but its strings
and numbers) has already been fully parsed once is recognised by a regex built from that
shape, which also proves it valid JSON. Anything else (usage, finish_reason, errors,
malformed or unusual lines) takes the full parse.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from harness.records.record import ErrorClass

DONE = "[DONE]"
MODEL_LIMIT = 200  # longest model name kept in a record


# The JSON grammar of the parts of a chunk that vary from one chunk to the next.
_EDGE = rb"[ \t\n\r\x0b\x0c]*"  # what bytes.strip() removes around the line and the payload
_NUMBER = rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
_BODY = rb'[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*'
_STRING = b'"' + _BODY + b'"'
_CONTENT = b'"((?=[^"])' + _BODY + b')"'  # non-empty, captured
# Keys whose values decide how a chunk is classified or what text it adds: kept verbatim.
_VERBATIM = frozenset(
    {"error", "usage", "finish_reason", "content", "reasoning_content", "reasoning", "text"}
)
_TRIES_PER_STREAM = 2  # shapes derived per stream before it stays on the full parse
_SHAPES_KEPT = 4  # tried on every line, most recent first
_DERIVED_MAX = 256  # per process: beyond, this server's chunks do not repeat a shape
_STYLES = ((",", ":"), (", ", ": "))  # compact (vLLM, SGLang, llama.cpp), Python's default


@dataclass(frozen=True, slots=True)
class _Shape:
    """The shape of a content chunk already checked by a full parse, as a regex.

    Keys, nesting, null/true/false and the values of the keys in _VERBATIM are fixed;
    other strings and numbers may vary (ids, `created`, per-chunk stamps, OpenAI's
    `obfuscation`), the content string must be non-empty. A line it matches is valid JSON
    (once its bytes are valid UTF-8) that a full parse would classify the same way: one
    content chunk, no usage, error or finish_reason. So it needs no parse.
    """

    pattern: re.Pattern[bytes]
    constant_text: str | None  # the answer text when the varying string is reasoning

    def text(self, match: re.Match[bytes]) -> str:
        if self.constant_text is not None:
            return self.constant_text
        raw = match.group(1)
        if b"\\" in raw:
            value: str = json.loads(b'"' + raw + b'"')
            return value
        return raw.decode("utf-8", "surrogatepass")

    @staticmethod
    def of(line: bytes, obj: dict[str, Any], choice: dict[str, Any], key: str) -> _Shape | None:
        """The shape of line (parsed as obj; choice[...][key] is its content), or None
        where the line is not written the way the shape would expect it."""
        container = choice.get("delta") if key != "text" else choice
        text = None if key in ("content", "text") else _content(choice)
        for comma, colon in _STYLES:
            body = _skeleton(obj, container, key, comma, colon)
            pattern = _compiled(_EDGE + b"data:" + _EDGE + body + _EDGE)
            if pattern is not None and pattern.fullmatch(line):
                return _Shape(pattern, text)
        return None


def _skeleton(value: Any, container: Any, key: str, comma: str, colon: str) -> bytes:
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            if value is container and k == key:
                part = _CONTENT
            elif k in _VERBATIM:
                part = re.escape(json.dumps(v, separators=(comma, colon)).encode())
            else:
                part = _skeleton(v, container, key, comma, colon)
            parts.append(re.escape(json.dumps(k).encode() + colon.encode()) + part)
        return rb"\{" + re.escape(comma.encode()).join(parts) + rb"\}"
    if isinstance(value, list):
        items = [_skeleton(v, container, key, comma, colon) for v in value]
        return rb"\[" + re.escape(comma.encode()).join(items) + rb"\]"
    if isinstance(value, str):
        return _STRING
    if value is None or isinstance(value, bool):
        return json.dumps(value).encode()
    if isinstance(value, int | float) and math.isfinite(value):
        return _NUMBER
    return rb"(?!)"  # NaN, Infinity: never matches, the stream keeps the full parse


# Shapes learnt from the streams so far. Process-wide, like re's own cache: a shape is
# sound for any stream, and every stream of a run shares the same one or two.
_SHAPES: list[_Shape] = []
_derived = 0


def _learn_shape(line: bytes, obj: dict[str, Any], choice: dict[str, Any], key: str) -> None:
    global _derived
    if _derived >= _DERIVED_MAX:
        return
    _derived += 1
    shape = _Shape.of(line, obj, choice, key)
    if shape is not None:
        _SHAPES[:] = [shape, *(s for s in _SHAPES if s != shape)][:_SHAPES_KEPT]


@functools.lru_cache(maxsize=64)
def _compiled(source: bytes) -> re.Pattern[bytes] | None:
    """Streams of one run share a few shapes: each is compiled once."""
    try:
        return re.compile(source)
    except (re.error, RecursionError):
        return None


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8", "surrogatepass")  # as json.loads decodes bytes
    except UnicodeDecodeError:
        return False
    return True


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
    # The model the chunks name, from the last one fully parsed: a line the shape cache
    # skips is a content chunk, and the finish and usage chunks after it are always parsed,
    # so a gateway that changed model mid-stream (a fallback) is seen at the end.
    model: str | None = None
    collect_text: bool = False  # keep the generated text (multi-turn workloads resend it)
    text_parts: list[str] = field(default_factory=list)
    _shapes_tried: int = field(default=0, init=False, repr=False, compare=False)

    def feed(self, line: bytes, t: float) -> None:
        """Take one raw line (with or without its newline) that arrived at monotonic time t."""
        for shape in _SHAPES:
            match = shape.pattern.fullmatch(line)
            if match is not None:
                if line.isascii() or _is_utf8(line):
                    self.chunk_times.append(t)
                    if self.collect_text:
                        self.text_parts.append(shape.text(match))
                    return
                break
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
        model = obj.get("model")
        if model and isinstance(model, str):
            self.model = model[:MODEL_LIMIT]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self._take_usage(usage)
        choices = obj.get("choices")
        if not isinstance(choices, list):
            if usage is None:
                self._fail(ErrorClass.MALFORMED_CHUNK, "chunk without choices or usage")
            return
        if not all(isinstance(choice, dict) for choice in choices):
            self._fail(ErrorClass.MALFORMED_CHUNK, "choice is not an object")
            return
        for choice in choices:
            found = _content_field(choice)
            if found is not None:
                self.chunk_times.append(t)
                if self.collect_text:
                    self.text_parts.append(_content(choice))
                if (
                    len(choices) == 1
                    and usage is None
                    and not choice.get("finish_reason")
                    and self._shapes_tried < _TRIES_PER_STREAM
                ):
                    self._shapes_tried += 1  # a stream that keeps changing shape stops trying
                    _learn_shape(line, obj, choice, found[0])
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


def _content_field(choice: dict[str, Any]) -> tuple[str, str] | None:
    """(key, text) of the generated text that makes this choice a content chunk, or None."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        for key in ("content", "reasoning_content", "reasoning"):
            value = delta.get(key)
            if isinstance(value, str) and value:
                return key, value
        return None
    text = choice.get("text")
    return ("text", text) if isinstance(text, str) and text else None


class Completion(NamedTuple):
    """What a non-streaming body says: the answer text is None when it has none."""

    prompt_tokens: int | None
    output_tokens: int | None
    text: str | None
    problem: str  # why there is no answer text
    model: str | None = None  # the model the body names


def parse_completion_text(body: bytes) -> Completion:
    """A non-streaming body: usage, answer text (or what is wrong with it) and model."""
    try:
        obj = json.loads(body)
    except ValueError:
        return Completion(None, None, None, f"body is not JSON: {body[:80]!r}")
    if not isinstance(obj, dict):
        return Completion(None, None, None, "body is not a JSON object")
    named = obj.get("model")
    model = named[:MODEL_LIMIT] if isinstance(named, str) and named else None
    prompt = output = None
    usage = obj.get("usage")
    if isinstance(usage, dict):
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        prompt = p if isinstance(p, int) else None
        output = c if isinstance(c, int) else None
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Completion(prompt, output, None, "no choices in body", model)
    first = choices[0]
    message = first.get("message")
    if isinstance(message, dict):
        content = message.get("content") or message.get("reasoning_content")
    else:
        content = first.get("text")
    if isinstance(content, str) and content:
        return Completion(prompt, output, content, "", model)
    return Completion(prompt, output, None, "no generated content in body", model)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("message", value)
    # Bounded, not clipped to show: the client takes the API key out first, then clips.
    return str(value)[:2048]
