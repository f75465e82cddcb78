"""An OpenAI-compatible server that fails on purpose, one way per server: the faults a real
target shows under load (the simulator's fault knobs cover some; these are the rest).

It speaks raw HTTP/1.1 on a loopback socket, one thread per connection, and closes each
connection after its answer. The fault applies to streamed completions, the load's requests;
GET /v1/models and the harness's non-streamed test request before the load are answered
normally (except in ``unauthorized_completions``), since a target that fails every request
from the first is unreachable rather than failing. Error bodies echo the caller's bearer key,
as careless servers do, so tests can check that no piece of it is kept.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator

MODEL = "fault-model"
MODES = (
    "ok",
    "every_500",
    "burst_503",
    "rate_limited",
    "cut_mid_stream",
    "reset",
    "malformed_chunk",
    "error_in_stream",
    "stall_after_headers",
    "slow_headers",
    "no_content",
    "no_usage",
    "no_done",
    "html_502",
    "unauthorized_completions",
    "dies_mid_run",
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _delta(text: str) -> dict[str, object]:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return {"id": "c1", "object": "chat.completion.chunk", "model": MODEL, "choices": [choice]}


USAGE = {"id": "c1", "object": "chat.completion.chunk", "model": MODEL, "choices": [],
         "usage": {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16}}  # fmt: skip
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
               b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n")  # fmt: skip


class FaultServer:
    """Serve ``mode`` on a free loopback port until closed."""

    def __init__(self, mode: str, tokens: int = 8, gap_s: float = 0.01) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}")
        self.mode, self.tokens, self.gap_s = mode, tokens, gap_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.streamed = 0  # streamed completion requests seen
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            head, body = self._read_request(conn)
            if head is None:
                return
            line = head.split(b"\r\n", 1)[0].decode()
            key = ""
            for h in head.split(b"\r\n")[1:]:
                name, _, value = h.decode().partition(":")
                if name.strip().lower() == "authorization":
                    key = value.strip().removeprefix("Bearer ")
            if line.startswith("GET") and "/models" in line:
                self._json(
                    conn, 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
                )
                return
            request = json.loads(body or b"{}")
            if self.mode == "unauthorized_completions":
                self._json(conn, 401, {"error": {"message": f"invalid key {key}", "code": 401}})
                return
            if not request.get("stream"):
                self._json(conn, 200, {"id": "c0", "object": "chat.completion", "model": MODEL,
                                       "choices": [{"index": 0, "message": {"content": "ok"}}],
                                       "usage": USAGE["usage"]})  # fmt: skip
                return
            with self._lock:
                self.streamed += 1
                n = self.streamed
            getattr(self, "_" + self.mode)(conn, n, key)

    @staticmethod
    def _read_request(conn: socket.socket) -> tuple[bytes | None, bytes]:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(65536)
            if not data:
                return None, b""
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for h in head.split(b"\r\n")[1:]:
            name, _, value = h.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            rest += conn.recv(65536)
        return head, rest[:length]

    @staticmethod
    def _json(conn: socket.socket, status: int, obj: object, extra: bytes = b"") -> None:
        data = json.dumps(obj).encode()
        reason = {200: "OK", 401: "Unauthorized", 429: "Too Many Requests", 500: "Internal "
                  "Server Error", 503: "Service Unavailable"}.get(status, "Error")  # fmt: skip
        conn.sendall(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                     b"connection: close\r\n%b\r\n%b" % (status, reason.encode(), len(data), extra,
                                                         data))  # fmt: skip

    def _stream(self, conn: socket.socket, tokens: int, usage: bool = True, done: bool = True,
                head: bytes = STREAM_HEAD) -> None:  # fmt: skip
        conn.sendall(head)
        for i in range(tokens):
            time.sleep(self.gap_s)
            conn.sendall(_chunk(_event(_delta(f"t{i} "))))
        if usage:
            conn.sendall(_chunk(_event(USAGE)))
        if done:
            conn.sendall(_chunk(b"data: [DONE]\n\n"))
        conn.sendall(b"0\r\n\r\n")

    # --- one method a mode: (connection, n-th streamed request, the caller's key) ----------
    def _ok(self, conn: socket.socket, n: int, key: str) -> None:
        self._stream(conn, self.tokens)

    def _every_500(self, conn: socket.socket, n: int, key: str) -> None:
        self._json(conn, 500, {"error": {"message": f"boom for key {key}", "code": 500}})

    def _burst_503(self, conn: socket.socket, n: int, key: str) -> None:
        if (n // 5) % 2 == 1:  # five bad, five good, ...
            self._json(conn, 503, {"error": {"message": "overloaded", "code": 503}})
        else:
            self._stream(conn, self.tokens)

    def _rate_limited(self, conn: socket.socket, n: int, key: str) -> None:
        self._json(conn, 429, {"error": {"message": "slow down", "code": 429}},
                   extra=b"retry-after: 1\r\n")  # fmt: skip

    def _cut_mid_stream(self, conn: socket.socket, n: int, key: str) -> None:
        conn.sendall(STREAM_HEAD)
        for i in range(self.tokens // 2):
            conn.sendall(_chunk(_event(_delta(f"t{i} "))))
        # The socket closes here, in the middle of the chunked body.

    def _reset(self, conn: socket.socket, n: int, key: str) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST

    def _malformed_chunk(self, conn: socket.socket, n: int, key: str) -> None:
        conn.sendall(STREAM_HEAD + _chunk(_event(_delta("a "))) + _chunk(b"data: {not json\n\n"))
        conn.sendall(b"0\r\n\r\n")

    def _error_in_stream(self, conn: socket.socket, n: int, key: str) -> None:
        conn.sendall(STREAM_HEAD + _chunk(_event(_delta("a "))))
        conn.sendall(_chunk(_event({"error": {"message": f"engine died, key {key}"}})))
        conn.sendall(b"0\r\n\r\n")

    def _stall_after_headers(self, conn: socket.socket, n: int, key: str) -> None:
        conn.sendall(STREAM_HEAD)
        time.sleep(4.0)  # past the scenario's read timeout

    def _slow_headers(self, conn: socket.socket, n: int, key: str) -> None:
        time.sleep(4.0)
        self._stream(conn, self.tokens)

    def _no_content(self, conn: socket.socket, n: int, key: str) -> None:
        self._stream(conn, 0)

    def _no_usage(self, conn: socket.socket, n: int, key: str) -> None:
        self._stream(conn, self.tokens, usage=False)

    def _no_done(self, conn: socket.socket, n: int, key: str) -> None:
        self._stream(conn, self.tokens, done=False)

    def _html_502(self, conn: socket.socket, n: int, key: str) -> None:
        page = (b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad "
                b"Gateway</h1></center><hr><center>nginx</center><!-- upstream auth "
                + key.encode() + b" --></body></html>")  # fmt: skip
        conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: "
                     b"%d\r\nconnection: close\r\n\r\n%b" % (len(page), page))  # fmt: skip

    def _dies_mid_run(self, conn: socket.socket, n: int, key: str) -> None:
        if n >= 12:
            self.close()  # no more connections: the target went away
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        self._stream(conn, self.tokens)


@contextlib.contextmanager
def fault_server(mode: str) -> Iterator[FaultServer]:
    server = FaultServer(mode)
    try:
        yield server
    finally:
        server.close()
