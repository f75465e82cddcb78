"""The private parts of Locust and geventhttpclient the load stage relies on, checked on real
objects, so an upgrade that moves them fails here with the reason instead of somewhere in a run.

``harness/load/streaming.py`` reads each response body itself (to stamp every chunk on arrival)
through ``HTTPSocketPoolResponse``'s socket, body buffer, parser feed and pool; the driver takes
the pooled ``HTTPClient`` out of Locust's ``FastHttpSession``. pyproject.toml pins both packages
to the versions these tests passed on.
"""

from __future__ import annotations

import contextlib
import inspect
import socket
import threading
from collections.abc import Iterator
from importlib import metadata

import pytest
from geventhttpclient import client as client_module
from geventhttpclient.client import HTTPClient
from geventhttpclient.response import HTTPSocketResponse
from geventhttpclient.url import URL
from locust import FastHttpUser
from locust.env import Environment
from packaging.requirements import Requirement

from harness.load.streaming import RawStream

_PIN_HINT = (
    "harness/load/streaming.py reads these; keep geventhttpclient pinned in pyproject.toml to "
    "a version that has them, or update streaming.py to the new internals"
)
BODY = [b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"]


@contextlib.contextmanager
def chunked_server() -> Iterator[int]:
    """A loopback server answering every request with a chunked two-line body."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                parts = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in BODY)
                conn.sendall(head + parts + b"0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def test_the_response_internals_streaming_reads_are_there() -> None:
    with chunked_server() as port:
        http = HTTPClient("127.0.0.1", port, concurrency=1, network_timeout=5.0)
        try:
            resp = http.request("GET", "/")
            missing = [
                name
                for name in (
                    "_sock",
                    "_body_buffer",
                    "_pool",
                    "feed",
                    "release",
                    "message_complete",
                    "status_code",
                    "read",
                )
                if not hasattr(resp, name)
            ]
            version = metadata.version("geventhttpclient")
            assert not missing, f"geventhttpclient {version} responses lack {missing}: {_PIN_HINT}"
            assert isinstance(resp._body_buffer, bytearray), _PIN_HINT
            pool = resp._pool
            assert pool is None or hasattr(pool, "release_socket"), _PIN_HINT
            stream = RawStream(resp)
            lines: list[bytes] = []
            while batch := stream.read_lines():
                lines += batch
            assert stream.status == 200
            assert [line for line in lines if line] == [b'data: {"x": 1}', b"data: [DONE]"]
        finally:
            http.close()


def test_the_client_internals_open_stream_sends_through_are_there() -> None:
    # open_stream has the client build a POST's head once (_build_request), takes a socket
    # from its pool and hands the first bytes read to the response as pre_buffered.
    http = HTTPClient("127.0.0.1", 9, concurrency=1)
    version = metadata.version("geventhttpclient")
    missing = [n for n in ("_build_request", "_connection_pool", "block_size", "headers_type")
               if not hasattr(http, n)]  # fmt: skip
    missing += [] if hasattr(client_module, "_FIELD_VALUE_RE") else ["client._FIELD_VALUE_RE"]
    pool = getattr(http, "_connection_pool", None)
    missing += [f"_connection_pool.{n}" for n in ("get_socket", "release_socket")
                if not hasattr(pool, n)]  # fmt: skip
    assert not missing, f"geventhttpclient {version} clients lack {missing}: {_PIN_HINT}"
    head = http._build_request("POST", "/v1/x", body=b"", headers={"X-Request-Id": "7"})
    # Without this ending open_stream falls back to request() (correct, but slower).
    assert head.endswith("Content-Length: 0\r\n\r\n"), (head, _PIN_HINT)
    assert "\r\nX-Request-Id: 7\r\n" in head, (head, _PIN_HINT)
    params = inspect.signature(HTTPSocketResponse.__init__).parameters
    assert "pre_buffered" in params, _PIN_HINT
    http.close()


def test_locust_hands_over_its_pooled_client() -> None:
    class User(FastHttpUser):
        host = "http://127.0.0.1:9"

    user = User(Environment(user_classes=[User]))
    pool = getattr(getattr(user.client, "client", None), "clientpool", None)
    version = metadata.version("locust")
    assert pool is not None, f"locust {version}: FastHttpSession.client.clientpool is gone"
    client = pool.get_client(URL("http://127.0.0.1:9/v1/chat/completions"))
    assert isinstance(client, HTTPClient), f"locust {version}: the pool no longer holds HTTPClients"


@pytest.mark.parametrize("package", ["locust", "geventhttpclient"])
def test_the_installed_versions_are_the_pinned_ones(package: str) -> None:
    pins = {
        Requirement(r).name: Requirement(r)
        for r in metadata.requires("llm-slo-harness") or []
        if "extra ==" not in r
    }
    assert package in pins, f"pyproject.toml should pin {package}"
    installed = metadata.version(package)
    assert pins[package].specifier.contains(installed), (package, installed, pins[package])
