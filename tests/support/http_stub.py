"""A small HTTP server on loopback for the tests' own stand-ins (pages, stalled servers)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and closed is expected in these tests


@contextlib.contextmanager
def serving(
    handler: type[BaseHTTPRequestHandler], before_stop: Callable[[], None] = lambda: None
) -> Iterator[str]:
    """Serve handler on a free 127.0.0.1 port; yield ``http://127.0.0.1:PORT``.

    ``before_stop`` runs first at exit (e.g. to release handlers a test keeps waiting).
    """
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        before_stop()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5.0)
