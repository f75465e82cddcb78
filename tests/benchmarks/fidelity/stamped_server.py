"""An OpenAI-style SSE server that writes its own send time into every chunk.

Each POST streams 20 chat chunks 10 ms apart (on an absolute schedule from the request's
arrival), then a usage chunk and [DONE], as HTTP/1.1 chunked transfer encoding on a
keep-alive connection, one HTTP chunk per SSE event as vLLM's uvicorn writes them. Every
content chunk carries `"t_send": time.monotonic()` taken just before the write, and the
server logs (request id, chunk index, t_send) so that a client which never looks inside the
JSON can still be matched chunk by chunk. CLOCK_MONOTONIC is system-wide on Linux, so
client arrival minus t_send is the delay the client added (plus loopback delivery).

A request is keyed by the body's `user` field (the benchmark clients) or else by the
number ending its `X-Request-Id` header (`harness run` sends `<run id>-<request id>`).
For a whole `harness run` it also answers what the run asks before the load: GET
/v1/models and /health, and a non-streaming POST (the preflight) with a JSON completion.

    python stamped_server.py PORT_FILE LOG_FILE [CHUNKS ITL_S [TTFT_S [SPREAD]]]

Writes the bound port to PORT_FILE; on SIGTERM writes the send log (npz) to LOG_FILE.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import resource
import signal
import socket
import sys
import time
from array import array
from pathlib import Path
from typing import cast

import numpy as np

HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"transfer-encoding: chunked\r\n"
    b"\r\n"
)
USER = re.compile(rb'"user"\s*:\s*"(\d+)"')
LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
REQUEST_ID = re.compile(rb"x-request-id:[^\r\n]*?(\d+)\r\n", re.IGNORECASE)
NOT_STREAMING = re.compile(rb'"stream"\s*:\s*false')
MODELS = b'{"object":"list","data":[{"id":"bench","object":"model","owned_by":"bench"}]}'
COMPLETION = (
    b'{"id":"chatcmpl-preflight","object":"chat.completion","created":1764201600,'
    b'"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"tok"},'
    b'"finish_reason":"length"}],"usage":{"prompt_tokens":8,"completion_tokens":1,'
    b'"total_tokens":9}}'
)


def _whole(status: bytes, body: bytes) -> bytes:
    """A complete keep-alive JSON answer."""
    return b"HTTP/1.1 %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
        status,
        len(body),
        body,
    )


UNKEYED = itertools.count(1)  # shared by every connection


class SendLog:
    """Send times of every content chunk, kept compact (≈ 50 000 chunks/s at 512 streams)."""

    def __init__(self) -> None:
        self.rid = array("q")
        self.idx = array("q")
        self.t_send = array("d")

    def save(self, path: Path) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        np.savez(
            path,
            rid=np.frombuffer(self.rid, dtype=np.int64),
            idx=np.frombuffer(self.idx, dtype=np.int64),
            t_send=np.frombuffer(self.t_send, dtype=np.float64),
            cpu_s=np.float64(usage.ru_utime + usage.ru_stime),
        )


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(payload), payload)


class Stream(asyncio.Protocol):
    """One keep-alive connection; one stream at a time (clients never pipeline)."""

    def __init__(
        self, log: SendLog, chunks: int, itl_s: float, ttft_s: float, spread: float = 0.0
    ) -> None:
        self.log = log
        self.unkeyed = UNKEYED
        self.chunks = chunks
        self.spread = int(chunks * spread)
        self.itl_s = itl_s
        self.ttft_s = ttft_s
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        match = LENGTH.search(self.buf, 0, end)
        length = int(match.group(1)) if match else 0
        if len(self.buf) < end + 4 + length:
            return
        head = self.buf[: end + 2]
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        assert self.transport is not None
        if not head.startswith(b"POST"):
            path = head.split(b" ", 2)[1]
            if path.endswith(b"/models"):
                self.transport.write(_whole(b"200 OK", MODELS))
            elif path.endswith(b"/health"):
                self.transport.write(_whole(b"200 OK", b"{}"))
            else:
                self.transport.write(_whole(b"404 Not Found", b'{"error":"not found"}'))
            return
        if NOT_STREAMING.search(body) or b'"stream"' not in body:
            self.transport.write(_whole(b"200 OK", COMPLETION))
            return
        user = USER.search(body)
        if user is None:
            user = REQUEST_ID.search(head)
        # A request with no id (a client that sends none): its own negative number, so that
        # it still gets a length of its own; its chunks cannot be matched to the client's.
        self.start(int(user.group(1)) if user else -next(self.unkeyed))

    def start(self, rid: int) -> None:
        assert self.transport is not None
        self.transport.write(HEADERS)
        t0 = time.monotonic()
        n = self.length(rid)
        for k in range(n):
            due = t0 + self.ttft_s + k * self.itl_s
            self.loop.call_later(due - time.monotonic(), self.send, rid, k, n)

    def length(self, rid: int) -> int:
        """CHUNKS, or with a spread a length fixed by the request id, uniform in CHUNKS ±
        spread: streams of one length started together stay in step forever (every first
        chunk of a closed loop's users at the same instant), which no real server does."""
        if not self.spread:
            return self.chunks
        return self.chunks - self.spread + (rid * 2654435761 % 2**32) % (2 * self.spread + 1)

    def send(self, rid: int, k: int, n: int) -> None:
        transport = self.transport
        if transport is None:
            return
        last = k == n - 1
        reason = b'"length"' if last else b"null"
        t = time.monotonic()
        event = (
            b'data: {"id":"chatcmpl-%d","object":"chat.completion.chunk","created":1764201600,'
            b'"model":"bench","choices":[{"index":0,"delta":{"content":" tok"},'
            b'"logprobs":null,"finish_reason":%b}],"t_send":%r}\n\n' % (rid, reason, t)
        )
        transport.write(_chunk(event))
        log = self.log
        log.rid.append(rid)
        log.idx.append(k)
        log.t_send.append(t)
        if last:
            usage = (
                b'data: {"id":"chatcmpl-%d","object":"chat.completion.chunk","created":1764201600,'
                b'"model":"bench","choices":[],"usage":{"prompt_tokens":8,'
                b'"completion_tokens":%d,"total_tokens":%d}}\n\n' % (rid, n, n + 8)
            )
            transport.write(_chunk(usage) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


async def serve(
    port_file: Path, log_file: Path, chunks: int, itl_s: float, ttft_s: float, spread: float
) -> None:
    loop = asyncio.get_running_loop()
    log = SendLog()
    server = await loop.create_server(
        lambda: Stream(log, chunks, itl_s, ttft_s, spread), "127.0.0.1", 0, backlog=2048
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    port = server.sockets[0].getsockname()[1]
    port_file.write_text(str(port))
    await stop.wait()
    server.close()
    log.save(log_file)


def main() -> None:
    port_file, log_file = Path(sys.argv[1]), Path(sys.argv[2])
    chunks = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    itl_s = float(sys.argv[4]) if len(sys.argv) > 4 else 0.010
    ttft_s = float(sys.argv[5]) if len(sys.argv) > 5 else itl_s
    spread = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    try:
        import uvloop
    except ImportError:  # plain asyncio still works, at a higher server CPU cost
        asyncio.run(serve(port_file, log_file, chunks, itl_s, ttft_s, spread))
    else:
        uvloop.run(serve(port_file, log_file, chunks, itl_s, ttft_s, spread))


if __name__ == "__main__":
    main()
