"""OpenAI-compatible request parsing and response bodies, shaped like vLLM's.

Streaming frames are cut from JSON templates once per request, so that each token
costs one bytes join on the engine's hot path instead of a ``json.dumps``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.sim.text import (
    WORDS,
    WORDS_JSON,
    chat_prompt_tokens,
    completion_prompt_tokens,
    count_tokens,
)

ApiKind = Literal["chat", "completion"]

_HOLE = "\x00"
_HOLE_JSON = json.dumps(_HOLE)
DONE_FRAME = b"data: [DONE]\n\n"


class _Lenient(BaseModel):
    """Clients send many sampling fields the simulator has no use for: ignore them."""

    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Lenient):
    include_usage: bool | None = False


class ContentPart(_Lenient):
    type: str
    text: str | None = None


class Message(_Lenient):
    role: str
    content: str | list[ContentPart] | None = None


class _GenerationRequest(_Lenient):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    n: Literal[1] = 1

    @property
    def requested_max_tokens(self) -> int | None:
        """vLLM takes max_tokens and falls back to max_completion_tokens."""
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_GenerationRequest):
    messages: list[Message] = Field(min_length=1)

    def prompt_tokens(self) -> int:
        return chat_prompt_tokens([_message_text(m) for m in self.messages])


class CompletionRequest(_GenerationRequest):
    prompt: str | list[int] | list[str] = Field(min_length=1)

    def prompt_tokens(self) -> int:
        prompt = self.prompt
        if isinstance(prompt, list) and isinstance(prompt[0], str):
            if len(prompt) != 1:
                raise BadRequestError("the simulator serves one prompt per request")
            prompt = prompt[0]
        return completion_prompt_tokens(prompt)


class TokenizeRequest(_Lenient):
    """vLLM's /tokenize: a prompt, or chat messages put through the template."""

    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    add_special_tokens: bool = True

    def count(self) -> int:
        """Tokens as a generation request with this prompt would count them in its usage."""
        if self.messages is not None:
            return chat_prompt_tokens([_message_text(m) for m in self.messages])
        if self.prompt is None:
            raise BadRequestError("prompt or messages is required")
        if self.add_special_tokens:
            return completion_prompt_tokens(self.prompt)
        return count_tokens(self.prompt)


class BadRequestError(ValueError):
    """A request the server answers with 400."""


def parse_request(kind: ApiKind, body: bytes) -> ChatRequest | CompletionRequest:
    """The typed request, or BadRequestError with a message fit for the client."""
    model = ChatRequest if kind == "chat" else CompletionRequest
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequestError(f"{where}: {first['msg']}") from None


def _message_text(message: Message) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    return " ".join(part.text for part in message.content if part.text)


def error_body(message: str, err_type: str, code: int) -> dict[str, Any]:
    """vLLM's (and OpenAI's) error envelope."""
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def output_text(words: list[int], stopped: bool) -> str:
    """Text of the output tokens; a sequence stopped by EOS ends with the empty EOS token."""
    return "".join(WORDS[w] for w in (words[:-1] if stopped else words))


@dataclass(frozen=True, slots=True)
class Reply:
    """Identity and framing of one response: id, kind, created time, model."""

    kind: ApiKind
    model: str
    request_id: str
    created: int

    @classmethod
    def new(cls, kind: ApiKind, model: str) -> Reply:
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        return cls(kind, model, prefix + uuid.uuid4().hex, int(time.time()))

    def _envelope(self) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {"id": self.request_id, "object": obj, "created": self.created, "model": self.model}

    def body(self, text: str, finish_reason: str, prompt_tokens: int, n_out: int) -> bytes:
        """The non-streaming response."""
        choice: dict[str, Any]
        if self.kind == "chat":
            obj = "chat.completion"
            message = {"role": "assistant", "content": text, "tool_calls": []}
            choice = {"index": 0, "message": message, "logprobs": None}
        else:
            obj = "text_completion"
            choice = {"index": 0, "text": text, "logprobs": None}
        choice |= {"finish_reason": finish_reason, "stop_reason": None}
        out = self._envelope() | {"object": obj, "choices": [choice]}
        out["usage"] = usage(prompt_tokens, n_out)
        return json.dumps(out).encode()

    def frames(self) -> StreamFrames:
        """Templates of this response's SSE frames."""
        env = self._envelope()
        role: bytes | None = None
        if self.kind == "chat":
            token = {"index": 0, "delta": {"content": _HOLE}, "logprobs": None}
            running_extra: dict[str, Any] = {"finish_reason": None}
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            role = _frame(env | {"choices": [first | running_extra]})
        else:
            token = {"index": 0, "text": _HOLE, "logprobs": None}
            running_extra = {"finish_reason": None, "stop_reason": None}
        running = _frame(env | {"choices": [token | running_extra]})
        final = _frame(env | {"choices": [token | {"finish_reason": _HOLE, "stop_reason": None}]})
        head, tail = running.split(_HOLE_JSON.encode())
        f_head, f_mid, f_tail = final.split(_HOLE_JSON.encode())
        return StreamFrames(role, head, tail, f_head, f_mid, f_tail, env)


def _frame(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


@dataclass(frozen=True, slots=True)
class StreamFrames:
    """SSE frames of one streaming response, each a ``data: ...\\n\\n`` line."""

    role: bytes | None
    """Chat's first frame, announcing the assistant role; None for completions."""
    _head: bytes
    _tail: bytes
    _final_head: bytes
    _final_mid: bytes
    _final_tail: bytes
    _envelope: dict[str, Any]

    def token(self, word: int | None, finish_reason: str | None) -> bytes:
        """The frame of one output token; word None is the EOS token (empty text)."""
        text = WORDS_JSON[word] if word is not None else b'""'
        if finish_reason is None:
            return self._head + text + self._tail
        reason = b'"' + finish_reason.encode() + b'"'
        return self._final_head + text + self._final_mid + reason + self._final_tail

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return _frame(
            self._envelope | {"choices": [], "usage": usage(prompt_tokens, completion_tokens)}
        )

    def malformed(self) -> bytes:
        """A frame cut short inside its JSON, as a broken proxy might pass on."""
        return self._head + b"\n\n"
