"""The one place that touches geventhttpclient's response internals (locust is pinned for it).

Locust's FastHttpSession stops its timer at the headers and its `iter_lines` reads 1 KiB
blocks, handing over about four SSE chunks at once. We read the body ourselves: each recv
(up to 64 KiB) is stamped with time.monotonic() once, fed to the response's own HTTP
parser (llhttp, which undoes the chunked encoding), and every line it completes carries
that recv's time, so a line is timed when its last byte arrived, however many came
together. On a plain socket we wait for it to become readable before the recv: a recv on
an empty gevent socket raises, catches and waits under a fresh gevent.Timeout, about 2 µs
a chunk; the read timeout is kept instead by one lazy timer per stream that looks at the
time of the last recv. The wait is one readiness watcher per stream whose callback is the
reading greenlet's own switch, and the recv goes to the OS socket directly: gevent's
`wait_read` makes a watcher per wait, which costs an fcntl (the new watcher's fd check) and
an epoll_ctl (re-arming an fd libev never disarmed) beside the one recv a chunk needs
(strace of a 128-stream run: 14 304 fcntl and 14 383 failed epoll_ctl for 15 143 recvs).
We also make sure a socket abandoned mid-stream is closed rather than returned to the
keep-alive pool with unread bytes in it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import gevent
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse

_RECV_BYTES = 1 << 16


class RawStream:
    """A response body read as batches of lines, each batch stamped; `abort()` discards it."""

    __slots__ = (
        "_body",
        "_fd",
        "_hub",
        "_idle_s",
        "_raw",
        "_reader",
        "_resp",
        "_sock",
        "_timer",
        "_waiting",
        "_watcher",
        "arrived",
    )

    def __init__(self, resp: HTTPSocketPoolResponse) -> None:
        self._resp = resp
        sock: Any = resp._sock  # None when the body was complete with the headers
        self._sock = sock
        self._body: bytearray = resp._body_buffer  # the parser appends the decoded body here
        self.arrived = time.monotonic()  # when the lines of the last batch arrived
        # TLS sockets can hold decrypted bytes the kernel no longer reports as readable:
        # they keep gevent's own recv and timeout.
        plain = sock is not None and not hasattr(sock, "pending")
        self._fd: int | None = sock.fileno() if plain else None
        self._raw: Any = getattr(sock, "_sock", None) if plain else None  # the OS socket
        self._hub: Any = gevent.get_hub()
        self._idle_s: float | None = sock.gettimeout() if plain else None
        self._timer: Any = None
        self._watcher: Any = None  # readiness of _fd, started at the first wait
        self._reader: Any = None
        self._waiting = False

    @property
    def status(self) -> int:
        return int(self._resp.status_code)

    def header(self, name: str) -> str | None:
        """A response header (any case), its last value when repeated; None when absent."""
        value = self._resp.get(name)
        if isinstance(value, list):
            return str(value[-1]) if value else None
        return None if value is None else str(value)

    def read_lines(self) -> list[bytes]:
        """The next complete lines (newlines removed; at least one), all stamped with
        `arrived`, the monotonic time of the recv that completed them; [] at the end of
        the body (a last line without its newline is returned before that)."""
        resp, body = self._resp, self._body
        while True:
            end = body.rfind(b"\n")
            if end >= 0:
                lines = bytes(body[:end]).split(b"\n")
                del body[: end + 1]
                return lines
            if resp.message_complete:
                self._stop_timer()
                if body:
                    rest = bytes(body)
                    body.clear()
                    return [rest]
                return []
            sock = resp._sock
            if sock is None:
                raise HTTPConnectionClosed("connection closed.")
            try:
                data = self._recv_plain() if self._raw is not None else sock.recv(_RECV_BYTES)
                self.arrived = time.monotonic()
                resp.feed(data)  # on the body's end the response hands the socket back
            except BaseException:
                self._stop_timer()
                resp.release()
                raise
            if not data and not resp.message_complete:
                raise HTTPConnectionClosed("connection closed in the middle of the body.")

    def _recv_plain(self) -> bytes:
        """Wait until the socket is readable, then recv from the OS socket itself (gevent's
        recv wrapper would only try it the same way, one Python call deeper)."""
        raw = self._raw
        while True:
            self._wait_readable()
            try:
                return raw.recv(_RECV_BYTES)  # type: ignore[no-any-return]
            except BlockingIOError:  # woken with nothing to read after all: wait again
                continue

    def _wait_readable(self) -> None:
        """Park this greenlet until the socket has bytes (or a timer throws into it). The
        watcher wakes the reader itself (its callback is the greenlet's own switch) and is
        started only while the reader is parked here."""
        watcher = self._watcher
        if watcher is None:
            hub = gevent.get_hub()
            self._reader = gevent.getcurrent()
            if self._idle_s is not None:
                every = max(self._idle_s / 4, 0.05)  # a silent stream is cut within 1.25 x idle_s
                self._timer = hub.loop.timer(every, every, ref=False)
                self._timer.start(self._check_idle)
            watcher = self._watcher = hub.loop.io(self._fd, 1)
        watcher.start(self._reader.switch)
        self._waiting = True
        try:
            self._hub.switch()
        finally:
            self._waiting = False
            if self._watcher is not None:
                self._watcher.stop()

    def _check_idle(self) -> None:
        """Runs in the hub: cut the read that has waited idle_s since the last bytes."""
        assert self._idle_s is not None
        if time.monotonic() - self.arrived < self._idle_s:
            return
        reader = self._reader
        self._stop_timer()
        if self._waiting:  # else the stream was left without abort(): just stop watching
            reader.throw(TimeoutError("timed out"))

    def _stop_timer(self) -> None:
        """Stop watching: the body is over, failed or abandoned (before the socket can go back
        to the pool, where another stream would watch the same descriptor)."""
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        self._reader = None

    def read_all(self, limit: int = 1 << 24) -> bytes:
        """The rest of the body (non-streaming answers, error bodies)."""
        return bytes(self._resp.read())[:limit]

    def finish(self, grace_s: float = 1.0) -> None:
        """Read what follows [DONE] (the body's end) so the connection can be reused;
        a server that keeps the body open past grace_s loses the connection instead."""
        try:
            with gevent.Timeout(grace_s):
                while self.read_lines():
                    pass
        except (gevent.Timeout, OSError, HTTPParseError):
            self.abort()

    def abort(self) -> None:
        """Close the connection so unread bytes can never reach the next request."""
        self._stop_timer()
        resp = self._resp
        pool = getattr(resp, "_pool", None)
        sock = getattr(resp, "_sock", None)
        if sock is not None and pool is not None:
            resp._sock = None
            resp._pool = None
            pool.release_socket(sock)  # closes it and frees the pool slot
        elif self._sock is not None:
            # Already handed back to the pool by the error path of a read: closing it
            # makes the pool's liveness check drop it.
            with contextlib.suppress(OSError):
                self._sock.close()
