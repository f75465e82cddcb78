"""The one place that touches geventhttpclient's response internals (locust is pinned for it).

Locust's FastHttpSession stops its timer at the headers and its `iter_lines` reads 1 KiB
blocks, handing over about four SSE chunks at once. We read the body line by line with the
response's own `readline`, so each line is timestamped when it arrives, and we make sure a
socket abandoned mid-stream is closed rather than returned to the keep-alive pool with
unread bytes in it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import gevent
from geventhttpclient.response import HTTPParseError, HTTPSocketPoolResponse


class RawStream:
    """A response body read line by line; `abort()` discards the connection."""

    __slots__ = ("_resp", "_sock")

    def __init__(self, resp: HTTPSocketPoolResponse) -> None:
        self._resp = resp
        self._sock: Any = resp._sock  # None when the body was complete with the headers

    @property
    def status(self) -> int:
        return int(self._resp.status_code)

    def readline(self) -> bytes:
        """The next line including b"\\n"; b"" at the end of the body."""
        return bytes(self._resp.readline(b"\n"))

    def read_all(self, limit: int = 1 << 24) -> bytes:
        """The rest of the body (non-streaming answers, error bodies)."""
        return bytes(self._resp.read())[:limit]

    def finish(self, grace_s: float = 1.0) -> None:
        """Read what follows [DONE] (the body's end) so the connection can be reused;
        a server that keeps the body open past grace_s loses the connection instead."""
        try:
            with gevent.Timeout(grace_s):
                while self._resp.readline(b"\n"):
                    pass
        except (gevent.Timeout, OSError, HTTPParseError):
            self.abort()

    def abort(self) -> None:
        """Close the connection so unread bytes can never reach the next request."""
        resp = self._resp
        pool = getattr(resp, "_pool", None)
        sock = getattr(resp, "_sock", None)
        if sock is not None and pool is not None:
            resp._sock = None
            resp._pool = None
            pool.release_socket(sock)  # closes it and frees the pool slot
        elif self._sock is not None:
            # Already handed back to the pool by readline's error path: closing it makes
            # the pool's liveness check drop it.
            with contextlib.suppress(OSError):
                self._sock.close()
