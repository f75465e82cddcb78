"""Where the engine's tokens go: straight onto a streaming response's socket, or into a
buffer for a non-streaming one.

The engine calls ``deliver`` for each token inside its step callback. Writing the SSE
frame to the transport right there, with HTTP/1.1 chunked framing done by hand, costs
one ``transport.write`` per token and no coroutine wake-up, which is what lets one core
serve hundreds of streams at a 10 ms step. The handler coroutine wakes once, at the end.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from harness.sim.faults import FaultPlan, fault_point
from harness.sim.protocol import DONE_FRAME, StreamFrames
from harness.sim.scheduler import FinishReason, Token
from harness.sim.text import output_word


class TokenSink(Protocol):
    """Receives one request's tokens from the engine."""

    @property
    def done(self) -> asyncio.Future[FinishReason]:
        """Resolved once the response has all it will get: finished or aborted."""
        ...

    def deliver(self, token: Token, now: float) -> bool:
        """Take one token; False when the client is gone or a fault cut it off."""
        ...

    def abort(self) -> None:
        """The engine dropped the request (shutdown)."""
        ...


def _resolve(future: asyncio.Future[FinishReason], reason: FinishReason) -> None:
    if not future.done():
        future.set_result(reason)


class BufferedSink:
    """Collects the output of a non-streaming request."""

    def __init__(
        self,
        transport: asyncio.BaseTransport,
        salt: int,
        plan: FaultPlan,
        num_tokens: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        self._salt = salt
        self._cut_at = fault_point(num_tokens) if plan.cut else -1
        self.words: list[int] = []
        self.done: asyncio.Future[FinishReason] = loop.create_future()

    def deliver(self, token: Token, now: float) -> bool:
        if self._transport.is_closing():
            _resolve(self.done, FinishReason.ABORT)
            return False
        if token.position == self._cut_at:
            self._transport.close()
            _resolve(self.done, FinishReason.ABORT)
            return False
        self.words.append(output_word(self._salt, token.position))
        if token.finish_reason is not None:
            _resolve(self.done, token.finish_reason)
        return True

    def abort(self) -> None:
        _resolve(self.done, FinishReason.ABORT)


class SseSink:
    """Writes a streaming response's frames as tokens arrive, applying its faults."""

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        frames: StreamFrames,
        salt: int,
        plan: FaultPlan,
        num_tokens: int,
        prompt_tokens: int,
        include_usage: bool,
        stall_s: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        self._frames = frames
        self._salt = salt
        self._plan = plan
        self._fault_at = fault_point(num_tokens) if plan.interrupts else -1
        self._prompt_tokens = prompt_tokens
        self._include_usage = include_usage
        self._stall_s = stall_s
        self._loop = loop
        self._held: list[bytes] | None = None
        self._finish: FinishReason | None = None
        self.done: asyncio.Future[FinishReason] = loop.create_future()

    def start(self) -> None:
        """Send what precedes the first token (chat's role frame)."""
        if self._frames.role is not None:
            self._write(self._frames.role)

    def deliver(self, token: Token, now: float) -> bool:
        if self._transport.is_closing():
            _resolve(self.done, FinishReason.ABORT)
            return False
        if token.position == self._fault_at and not self._interrupt(now):
            return False
        reason = token.finish_reason
        is_eos = reason is FinishReason.STOP
        word = None if is_eos else output_word(self._salt, token.position)
        self._write(self._frames.token(word, reason))
        if reason is not None:
            if self._include_usage:
                self._write(self._frames.usage(self._prompt_tokens, token.position + 1))
            self._write(DONE_FRAME)
            self._finish = reason
            if self._held is None:
                _resolve(self.done, reason)
        return True

    def abort(self) -> None:
        _resolve(self.done, FinishReason.ABORT)

    def _interrupt(self, now: float) -> bool:
        """Apply the mid-stream faults; False when the connection was cut."""
        if self._plan.cut:
            self._transport.close()  # flushes what was sent, then FIN: no [DONE]
            _resolve(self.done, FinishReason.ABORT)
            return False
        if self._plan.malformed:
            self._write(self._frames.malformed())
        if self._plan.stall:
            self._held = []
            self._loop.call_at(now + self._stall_s, self._release)
        return True

    def _release(self) -> None:
        held, self._held = self._held or [], None
        if held and not self._transport.is_closing():
            self._transport.write(b"".join(held))
        if self._finish is not None:
            _resolve(self.done, self._finish)

    def _write(self, frame: bytes) -> None:
        chunk = b"%x\r\n%b\r\n" % (len(frame), frame)
        if self._held is not None:
            self._held.append(chunk)
        else:
            self._transport.write(chunk)
