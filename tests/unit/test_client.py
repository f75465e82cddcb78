"""The wire client against a scripted HTTP/1.1 server: line timing, read timeout, keep-alive.

The server runs in a real thread (this process is not gevent-patched), the client in gevent
as in the load generator; each test scripts what the server writes and when.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from geventhttpclient.client import HTTPClient
from support.secrets import key_pieces

from harness.load.client import RequestOptions, send
from harness.load.openai_api import Endpoint
from harness.records.record import ErrorClass

Script = Callable[[socket.socket], None]
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}\n\n'
END = b"data: [DONE]\n\n"


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class Server:
    """Answers each request on each connection with the next script; counts connections."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.connections = 0
        self.heads: list[bytes] = []  # each request's line and headers, as received
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # the client may hang up first
            buf = b""
            while self.scripts:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                self.heads.append(head)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                self.scripts.pop(0)(conn)


@pytest.fixture
def serve() -> Iterator[Callable[..., tuple[Server, HTTPClient]]]:
    made: list[tuple[Server, HTTPClient]] = []

    def start(*scripts: Script, read_timeout_s: float = 2.0) -> tuple[Server, HTTPClient]:
        server = Server(list(scripts))
        http = HTTPClient(
            "127.0.0.1", server.port, concurrency=1, network_timeout=read_timeout_s,
            connection_timeout=2.0,
        )  # fmt: skip
        made.append((server, http))
        return server, http

    yield start
    for server, http in made:
        http.close()
        server.listener.close()


def _options(timeout_s: float = 10.0) -> RequestOptions:
    endpoint = Endpoint(
        base_url="http://127.0.0.1", path="/v1/chat/completions", headers={}, api_key=None
    )
    return RequestOptions(endpoint=endpoint, stream=True, request_timeout_s=timeout_s)


def _stream(*parts: bytes | float, end: bool = True) -> Script:
    """Write each bytes part as one chunk of the body; a float part sleeps that long."""

    def script(conn: socket.socket) -> None:
        conn.sendall(HEAD)
        for part in parts:
            if isinstance(part, float):
                time.sleep(part)
            else:
                conn.sendall(_chunked(part))
        if end:
            conn.sendall(b"0\r\n\r\n")

    return script


def test_a_line_is_timed_when_its_last_byte_arrives(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    half = len(CHUNK) // 2
    _, http = serve(_stream(CHUNK[:half], 0.2, CHUNK[half:] + CHUNK, 0.1, CHUNK + END))
    t0 = time.monotonic()
    ex = send(http, _options(), b"{}", "cut")
    assert ex.error is None, ex.error_detail
    first, second, third = (t - t0 for t in ex.chunk_times)
    assert first >= 0.2  # not when its first half came
    assert second == first  # arrived together: one recv, one time
    assert third - second >= 0.09


def test_each_request_carries_its_id_for_the_server_s_logs(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    server, http = serve(_stream(CHUNK + END), _stream(CHUNK + END))
    assert (
        send(http, _options(), b"{}", "cut", request_id="20261203T0216Z-base-7f5b-41").error is None
    )
    assert send(http, _options(), b"{}", "cut").error is None
    first, second = (dict(line.split(b": ", 1) for line in h.split(b"\r\n")[1:])
                     for h in server.heads)  # fmt: skip
    assert first[b"X-Request-Id"] == b"20261203T0216Z-base-7f5b-41"
    assert b"X-Request-Id" not in second


def test_a_silent_stream_is_cut_after_the_read_timeout(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    _, http = serve(_stream(CHUNK, 3.0, CHUNK + END), read_timeout_s=0.4)
    t0 = time.monotonic()
    ex = send(http, _options(), b"{}", "cut")
    waited = time.monotonic() - t0
    assert ex.error is ErrorClass.TIMEOUT
    assert "network timeout" in ex.error_detail
    assert len(ex.chunk_times) == 1
    assert 0.4 <= waited < 0.4 * 1.25 + 0.2


def test_a_slow_but_steady_stream_is_not_cut(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    steady: list[bytes | float] = [CHUNK, 0.15] * 6
    _, http = serve(_stream(*steady, END), read_timeout_s=0.4)
    ex = send(http, _options(), b"{}", "cut")
    assert ex.error is None, ex.error_detail
    assert len(ex.chunk_times) == 6


def test_the_connection_is_reused_after_done(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    server, http = serve(_stream(CHUNK, END), _stream(CHUNK, CHUNK + END))
    first = send(http, _options(), b"{}", "cut")
    second = send(http, _options(), b"{}", "cut")
    assert (first.error, second.error) == (None, None)
    assert (len(first.chunk_times), len(second.chunk_times)) == (1, 2)
    assert server.connections == 1


def test_a_body_cut_mid_stream_is_a_broken_stream(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    def cut(conn: socket.socket) -> None:
        _stream(CHUNK, end=False)(conn)
        conn.sendall(b"40\r\ndata: {")
        conn.shutdown(socket.SHUT_RDWR)

    _, http = serve(cut)
    ex = send(http, _options(), b"{}", "cut")
    assert ex.error is ErrorClass.BROKEN_STREAM, ex.error_detail
    assert len(ex.chunk_times) == 1


def test_a_body_without_done_is_incomplete(serve: Callable[..., tuple[Server, HTTPClient]]) -> None:
    _, http = serve(_stream(CHUNK, CHUNK))
    ex = send(http, _options(), b"{}", "cut")
    assert ex.error is ErrorClass.INCOMPLETE
    assert len(ex.chunk_times) == 2


def test_a_malformed_line_ends_the_read_when_it_arrives(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    """Lines are parsed as they come (in the hub's read callback), not at the body's end."""
    _, http = serve(_stream(CHUNK, b"data: {not json\n\n", 1.5, CHUNK + END), read_timeout_s=5.0)
    t0 = time.monotonic()
    ex = send(http, _options(), b"{}", "cut")
    assert ex.error is ErrorClass.MALFORMED_CHUNK, ex.error_detail
    assert len(ex.chunk_times) == 1
    assert time.monotonic() - t0 < 1.0  # not after the server's 1.5 s pause


def test_a_deadline_while_reading_frees_the_connection(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    """The request's deadline thrown into a read: TIMEOUT, and the half-read connection is
    closed, its pool slot free (the pool has one): the next request opens connection 2."""
    server, http = serve(_stream(CHUNK, 2.0, CHUNK + END), _stream(CHUNK + END))
    ex = send(http, _options(timeout_s=0.3), b"{}", "cut")
    assert ex.error is ErrorClass.TIMEOUT, ex.error_detail
    assert len(ex.chunk_times) == 1
    after = send(http, _options(), b"{}", "cut")
    assert after.error is None, after.error_detail
    assert server.connections == 2


KEY = "sk-secret-XYZ1234567"


def _status_401(body: bytes) -> Script:
    def script(conn: socket.socket) -> None:
        head = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: %d\r\n\r\n" % len(body)
        conn.sendall(head + body)

    return script


def _keyed_options() -> RequestOptions:
    endpoint = Endpoint(base_url="http://127.0.0.1", path="/v1/chat/completions",
                        headers={}, api_key=KEY)  # fmt: skip
    return RequestOptions(endpoint=endpoint, stream=True, request_timeout_s=10.0)


def test_no_piece_of_the_key_survives_in_an_error_body_at_any_offset(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    # The body is read up to 2048 bytes and the detail kept to 240 characters: the key is
    # placed across both cuts and everywhere between.
    offsets = range(2060)
    _, http = serve(*(_status_401(b"x" * i + KEY.encode() + b"y" * 40) for i in offsets))
    for i in offsets:
        ex = send(http, _keyed_options(), b"{}", "cut")
        assert ex.error is ErrorClass.HTTP_STATUS
        assert not key_pieces(ex.error_detail, KEY), (i, ex.error_detail)
        assert len(ex.error_detail) <= 240


def test_no_piece_of_the_key_survives_in_an_error_inside_a_stream(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    offsets = range(0, 2100, 7)  # every 7th: the body test above takes every offset

    def error_event(i: int) -> bytes:
        message = "x" * i + KEY + "y" * 30
        return b'data: {"error": {"message": "%s"}}\n\n' % message.encode()

    _, http = serve(*(_stream(CHUNK, error_event(i)) for i in offsets))
    for i in offsets:
        ex = send(http, _keyed_options(), b"{}", "cut")
        assert ex.error is ErrorClass.BROKEN_STREAM, ex.error_detail
        assert not key_pieces(ex.error_detail, KEY), (i, ex.error_detail)


def test_the_gateway_s_headers_and_the_body_s_model_say_who_served(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    head = HEAD.replace(
        b"\r\n\r\n",
        b"\r\nx-litellm-model-api-base: http://admin:pw@Backup.local:8000/v1?api-key=k"
        b"\r\nx-litellm-model-id: 7371\r\nX-LiteLLM-Attempted-Fallbacks: 2"
        b"\r\nx-litellm-attempted-retries: 0\r\n\r\n",
    )
    named = CHUNK.replace(b'{"choices"', b'{"model":"fallback","choices"')
    finish = (
        b'data: {"model":"fallback","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    )

    def script(conn: socket.socket) -> None:
        conn.sendall(head + _chunked(named + CHUNK + finish + END) + b"0\r\n\r\n")

    _, http = serve(script, _stream(CHUNK + END))
    ex = send(http, _options(), b"{}", "cut")
    assert ex.error is None, ex.error_detail
    assert (ex.served_by, ex.fallbacks, ex.retries) == ("http://backup.local:8000/v1", 2, 0)
    assert ex.served_model == "fallback"
    bare = send(http, _options(), b"{}", "cut")  # a server that says nothing of the kind
    assert (bare.served_by, bare.fallbacks, bare.retries, bare.served_model) == (None,) * 4


def test_the_request_goes_out_as_geventhttpclient_writes_it(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    # send builds the line and headers once per client and path; they must be the bytes
    # geventhttpclient's own request writes for the same POST.
    server, http = serve(_stream(CHUNK + END), _status_401(b"no"), _stream(CHUNK + END))
    body = b'{"model":"m","messages":[]}'
    assert send(http, _keyed_options(), body, "cut", request_id="run-7").error is None
    headers = {**_keyed_options().endpoint.headers, "X-Request-Id": "run-7"}
    http.request("POST", "/v1/chat/completions", body=body, headers=headers).read()
    assert server.heads[0] == server.heads[1]
    assert send(http, _options(), b"{}", "cut").error is None  # the same client, other headers
    assert b"X-Request-Id" not in server.heads[2]


def test_headers_cut_across_packets_and_the_first_chunk_with_them(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    def split(conn: socket.socket) -> None:
        conn.sendall(HEAD[:20])
        time.sleep(0.1)
        conn.sendall(HEAD[20:] + _chunked(CHUNK))
        time.sleep(0.2)
        conn.sendall(_chunked(CHUNK + END) + b"0\r\n\r\n")

    _, http = serve(split)
    t0 = time.monotonic()
    ex = send(http, _options(), b"{}", "cut")
    assert ex.error is None, ex.error_detail
    first, second = (t - t0 for t in ex.chunk_times)
    assert 0.1 <= first < 0.25  # with the rest of the headers, not at the first bytes
    assert second - first >= 0.19


def test_a_server_that_hangs_up_without_a_word_is_a_connect_error(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    def hang_up(conn: socket.socket) -> None:
        conn.shutdown(socket.SHUT_RDWR)

    server, http = serve(hang_up, _stream(CHUNK + END))
    ex = send(http, _options(timeout_s=5.0), b"{}", "cut")
    assert ex.error is ErrorClass.CONNECT, ex.error_detail
    assert "connection closed" in ex.error_detail
    # The one-connection pool got its slot back: the next request opens a new connection.
    again = send(http, _options(timeout_s=5.0), b"{}", "cut")
    assert again.error is None, again.error_detail
    assert server.connections == 2


def test_a_server_that_never_answers_is_cut_after_the_read_timeout(
    serve: Callable[..., tuple[Server, HTTPClient]],
) -> None:
    _, http = serve(lambda conn: time.sleep(3.0), read_timeout_s=0.4)
    t0 = time.monotonic()
    ex = send(http, _options(), b"{}", "cut")
    waited = time.monotonic() - t0
    assert ex.error is ErrorClass.TIMEOUT, ex.error_detail
    assert "network timeout" in ex.error_detail
    assert 0.4 <= waited < 0.4 * 1.25 + 0.2


def test_a_deadline_while_sending_frees_the_connection_s_slot() -> None:
    # The server takes nothing of the first request, so its 32 MiB body stalls in sendall
    # until the request's deadline; the one-connection pool must get its slot back for the
    # next request (which the server answers on a second connection).
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            accepted.append(listener.accept()[0])  # never read
            conn, _ = listener.accept()
            with conn:
                buf = b""
                while b"\r\n\r\n" not in buf:
                    buf += conn.recv(65536)
                _stream(CHUNK + END)(conn)

    threading.Thread(target=serve, daemon=True).start()
    http = HTTPClient("127.0.0.1", listener.getsockname()[1], concurrency=1,
                      network_timeout=5.0, connection_timeout=2.0)  # fmt: skip
    try:
        stuck = send(http, _options(timeout_s=0.5), b"x" * (32 << 20), "cut")
        assert stuck.error is ErrorClass.TIMEOUT, stuck.error_detail
        again = send(http, _options(timeout_s=5.0), b"{}", "cut")
        assert again.error is None, again.error_detail
    finally:
        http.close()
        listener.close()
        for conn in accepted:
            conn.close()
