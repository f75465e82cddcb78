"""The one place that touches geventhttpclient's internals (it is pinned for them): the POST
goes out from a head built once per client (`open_stream`), and the answer is read here.

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
The body's lines are read in the hub (`RawStream.pump`): the watcher's callback does the
recv, the stamp, the parse and hands each line to the caller's handler, waking the reader
only when the stream is done or failed, two greenlet switches fewer a chunk (the whole run at
64 open streams: 1.17x the chunks per CPU-second, eight runs each). We also make sure a
socket abandoned mid-stream is closed rather than returned to the keep-alive pool with
unread bytes in it.
"""

from __future__ import annotations

import contextlib
import errno
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import gevent
from geventhttpclient.client import _FIELD_VALUE_RE, HTTPClient
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError, HTTPSocketPoolResponse

_RECV_BYTES = 1 << 16


class RawStream:
    """A response body read as batches of lines, each batch stamped; `abort()` discards it."""

    __slots__ = (
        "_body",
        "_failure",
        "_fd",
        "_hub",
        "_idle_s",
        "_raw",
        "_reader",
        "_resp",
        "_sock",
        "_take",
        "_timer",
        "_waiting",
        "_watcher",
        "arrived",
    )

    def __init__(self, resp: HTTPSocketPoolResponse | None, sock: Any = None) -> None:
        """A stream over resp; or, with resp None, over sock before its response is read
        (`open_stream` reads the headers through the stream's own watcher, then `_attach`)."""
        if resp is not None:
            sock = resp._sock  # None when the body was complete with the headers
        self._sock = sock
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
        self._take: Callable[[bytes, float], bool] | None = None  # pump's line handler
        self._failure: BaseException | None = None  # what pump's callback met, for the reader
        if resp is not None:
            self._attach(resp)

    def _attach(self, resp: HTTPSocketPoolResponse) -> None:
        self._resp = resp
        self._body: bytearray = resp._body_buffer  # the parser appends the decoded body here

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

    def pump(self, take: Callable[[bytes, float], bool]) -> None:
        """Hand every complete line to `take(line, arrived)` (blank ones skipped) until it
        returns True, the body ends or the read fails; then return, the rest for `read_lines`.

        On a plain socket the lines are read in the hub: the readiness callback does the
        recv, the stamp, the HTTP parse and `take`, and wakes the reader only at the end,
        two greenlet switches fewer a chunk. Errors reach the reader as they would through
        `read_lines` (the socket released, the exception raised here), and so do the timers
        that throw into it (the request's deadline, the idle read timeout, a cut)."""
        if self._raw is None or self._lines_to(take, self.arrived):
            return
        resp = self._resp
        if resp.message_complete or resp._sock is None:
            return
        self._take = take
        self._ensure_watching()
        watcher = self._watcher
        watcher.start(self._on_readable)
        self._waiting = True
        try:
            self._hub.switch()
        except BaseException:
            self._stop_timer()
            resp.release()
            raise
        finally:
            self._waiting = False
            self._take = None
            if self._watcher is not None:
                self._watcher.stop()
        failure, self._failure = self._failure, None
        if failure is not None:
            self._stop_timer()
            resp.release()
            raise failure

    def _lines_to(self, take: Callable[[bytes, float], bool], now: float) -> bool:
        """Give take the complete lines in the buffer; True when it asked to stop."""
        body = self._body
        end = body.rfind(b"\n")
        if end < 0:
            return False
        lines = bytes(body[:end]).split(b"\n")
        del body[: end + 1]
        for line in lines:  # noqa: SIM110  (a loop: no generator frame a chunk)
            if line and take(line, now):
                return True  # the rest of the batch is not read (as in the reader's loop)
        return False

    def _on_readable(self) -> None:
        """Runs in the hub when the socket is readable, while `pump` waits."""
        resp, take = self._resp, self._take
        if take is None:
            return
        try:
            data = self._raw.recv(_RECV_BYTES)
        except BlockingIOError:
            return
        except BaseException as exc:
            self._failure = exc
            self._wake()
            return
        now = self.arrived = time.monotonic()
        try:
            resp.feed(data)  # on the body's end the response hands the socket back
            if self._lines_to(take, now) or resp.message_complete:
                self._wake()
            elif not data:
                raise HTTPConnectionClosed("connection closed in the middle of the body.")
        except BaseException as exc:
            self._failure = exc
            self._wake()

    def _wake(self) -> None:
        """Stop reading in the hub and let the reader go on (the last thing a callback does:
        the reader may be done with this stream by the time the switch returns)."""
        self._take = None
        if self._watcher is not None:
            self._watcher.stop()
        if self._waiting:
            self._reader.switch()

    def _read_head(self) -> bytes:
        """The response's first bytes, up to the end of its headers (as far as one 64 KiB
        read goes), each recv stamped: the first chunk may come with them."""
        head = b""
        while True:
            data = self._recv_plain()
            self.arrived = time.monotonic()
            head += data
            if not data or b"\r\n\r\n" in head or len(head) >= _RECV_BYTES:
                return head

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
        self._ensure_watching()
        watcher = self._watcher
        watcher.start(self._reader.switch)
        self._waiting = True
        try:
            self._hub.switch()
        finally:
            self._waiting = False
            if self._watcher is not None:
                self._watcher.stop()

    def _ensure_watching(self) -> None:
        """The stream's readiness watcher and idle timer, made at the first wait."""
        if self._watcher is None:
            hub = gevent.get_hub()
            self._reader = gevent.getcurrent()
            if self._idle_s is not None:
                every = max(self._idle_s / 4, 0.05)  # a silent stream is cut within 1.25 x idle_s
                self._timer = hub.loop.timer(every, every, ref=False)
                self._timer.start(self._check_idle)
            self._watcher = hub.loop.io(self._fd, 1)

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
        self._stop_timer()  # the response reads through gevent's own recv from here
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


# Sending: the request's line and headers are the same for every request of a run but for
# its length and id, so they are built once per client and path by geventhttpclient itself
# (its `request` builds and validates them anew each time: two header merges and a regex per
# field, about a third of a request's CPU outside the body in a profile of `harness run`).

_CONTENT_LENGTH_TAIL = "Content-Length: 0\r\n\r\n"
_ID_MARK = "harness-request-id"  # stands for the id while the head is built
_SPECIAL = frozenset({"content-length", "transfer-encoding", "expect"})
_Head = tuple[str, str]  # the head up to the id's value, and from the end of that line
_heads: weakref.WeakKeyDictionary[HTTPClient, dict[tuple[object, ...], _Head | None]]
_heads = weakref.WeakKeyDictionary()


def _head(
    http: HTTPClient, path: str, headers: Mapping[str, str], id_header: str | None
) -> _Head | None:
    """What geventhttpclient writes before a POST's body, split around the id header's value
    and less the Content-Length line and the blank line ending it; None where it would write
    something else (then `request` sends it)."""
    key = (path, id_header, *headers.items())
    per_client = _heads.get(http)
    if per_client is None:
        per_client = _heads[http] = {}
    if key in per_client:
        return per_client[key]
    fields = dict(headers)
    if id_header is not None:
        fields[id_header] = _ID_MARK
    text = http._build_request("POST", path, body=b"", headers=fields)
    head: _Head | None = None
    if text.endswith(_CONTENT_LENGTH_TAIL) and not _SPECIAL & {k.lower() for k in fields}:
        text = text[: -len(_CONTENT_LENGTH_TAIL)]
        parts = text.split(f"{id_header}: {_ID_MARK}\r\n") if id_header else [text, ""]
        if len(parts) == 2:
            before = parts[0] + (f"{id_header}: " if id_header else "")
            head = (before, "\r\n" + parts[1] if id_header else "")
    per_client[key] = head
    return head


def open_stream(
    http: HTTPClient,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    request_id: str | None = None,
    id_header: str = "X-Request-Id",
) -> RawStream:
    """POST body and read the response's headers: what `http.request` does for a POST (no
    retry once sent, the socket back to the pool or closed on every error), with the head
    built once, and the headers read through the stream's own readiness watcher, the one the
    body is read with (gevent's recv would make a watcher and a timeout per wait). The stamp
    of a first chunk that came with the headers is the time of that recv."""
    head = _head(http, path, headers, id_header if request_id is not None else None)
    if head is None or (request_id is not None and not _FIELD_VALUE_RE.fullmatch(request_id)):
        if request_id is not None:
            headers = {**headers, id_header: request_id}
        return RawStream(http.request("POST", path, body=body, headers=headers))
    before, after = head
    text = f"{before}{request_id or ''}{after}Content-Length: {len(body)}\r\n\r\n"
    data = text.encode("latin-1") + body
    pool = http._connection_pool
    kw = {"block_size": http.block_size, "method": "POST", "headers_type": http.headers_type}
    sock = pool.get_socket()
    try:
        sock.sendall(data)
    except OSError as exc:
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
            pool.release_socket(sock)
            raise
        # The server may have answered (a 413, a 401) and closed before taking the whole
        # body: what it said is the answer. The response frees the socket on its errors.
        return RawStream(HTTPSocketPoolResponse(sock, pool, **kw))
    except BaseException:  # the deadline or a cut while sending: the slot goes back too
        pool.release_socket(sock)
        raise
    stream = RawStream(None, sock)
    if stream._raw is None:  # TLS: the response reads its headers through gevent's recv
        stream._attach(HTTPSocketPoolResponse(sock, pool, **kw))
        return stream
    try:
        first = stream._read_head()
        if not first:
            raise HTTPConnectionClosed("connection closed.")
    except BaseException as exc:
        stream._stop_timer()
        pool.release_socket(sock)
        if isinstance(exc, OSError) and exc.errno == errno.ECONNRESET:
            raise HTTPConnectionClosed("connection closed.") from None
        raise
    try:  # the response parses them (and reads on itself past an interim 1xx answer)
        stream._attach(HTTPSocketPoolResponse(sock, pool, pre_buffered=first, **kw))
    except BaseException:
        stream._stop_timer()  # the response has freed the socket
        raise
    if b"\r\n\r\n" not in first:  # it read more itself: its last bytes came by now
        stream.arrived = time.monotonic()
    return stream
