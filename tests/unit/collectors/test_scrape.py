"""``Scraper`` against a loopback metrics page: a good scrape, HTTP errors, a refused
connection, a page of unknown metrics, the bearer header, and pages or servers that break
mid-way. A scrape returns a Snapshot or None and counts the failure; it never raises."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from support.http_stub import serving
from support.proc import free_port

from harness.collectors.scrape import Scraper

VLLM_PAGE = b"""\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama-3-8b",pod="a"} 2.0
vllm:num_requests_waiting{engine="0",model_name="llama-3-8b",pod="b"} 5.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="llama-3-8b",pod="a"} 120.0
vllm:prompt_tokens_total{engine="0",model_name="llama-3-8b",pod="b"} 30.0
# HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="llama-3-8b",pod="a"} 1.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="llama-3-8b",pod="a"} 3.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="llama-3-8b",pod="a"} 3.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="llama-3-8b",pod="a"} 1.5
"""

DCGM_PAGE = b"""\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",Hostname="n1",pod="p"} 50
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",Hostname="n1",pod="q"} 100
"""

OTHER_PAGE = b"""\
# HELP python_info Python platform information
# TYPE python_info gauge
python_info{implementation="CPython",major="3",minor="11",patchlevel="7",version="3.11.7"} 1.0
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 12.0
http_requests_total{handler="/v1/chat/completions",method="POST",status="2xx"} 3.0
"""

BAD_LE_PAGE = b'vllm:e2e_request_latency_seconds_bucket{le="fast"} 1.0\n'


@dataclass
class Seen:
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    seen: Seen
    pages: ClassVar[dict[str, bytes]] = {
        "/metrics": VLLM_PAGE,
        "/dcgm": DCGM_PAGE,
        "/other": OTHER_PAGE,
        "/html": b"<html><body>Sign in</body></html>\n",
        "/bad-le": BAD_LE_PAGE,
    }

    def do_GET(self) -> None:
        self.seen.headers.append(dict(self.headers.items()))
        if self.path == "/slow":
            self.seen.release.wait(timeout=5.0)  # bounded; released at teardown
        if self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(VLLM_PAGE)))
            self.end_headers()
            self.wfile.write(VLLM_PAGE[:40])  # the server dies mid-page
            self.close_connection = True
            return
        if self.path == "/boom":
            self.send_error(500, "Internal Server Error")
            return
        body = self.pages.get(self.path.split("?")[0], b"")
        if not body and self.path != "/slow":
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body or VLLM_PAGE)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the scraper gave up (the slow case)
            self.wfile.write(body or VLLM_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    handler = type("Handler", (_Handler,), {"seen": seen})
    with serving(handler, before_stop=seen.release.set) as url:
        yield url, seen


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A TCP server that answers anything with a line that is not HTTP (a wrong port)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5.0)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2.0)
            try:
                conn.recv(4096)
                conn.sendall(b"+OK redis ready\r\n\r\n")
            except OSError:
                pass

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        listener.close()
        thread.join(timeout=5.0)


def scraper(url: str, **kwargs: Any) -> Scraper:
    return Scraper(name="srv", url=url, kind=kwargs.pop("kind", None), timeout_s=2.0, **kwargs)


def test_ok_scrape_detects_the_kind_and_combines(metrics_server: tuple[str, Seen]) -> None:
    base, seen = metrics_server
    s = scraper(f"{base}/metrics")
    before = time.time()
    snap = s.scrape()
    assert snap is not None
    assert before <= snap.wall <= time.time()
    assert s.kind == "vllm"
    assert snap.values["server.queue_waiting"] == {"": 7.0}
    assert snap.values["server.prompt_tokens"] == {"": 150.0}
    assert snap.values["server.e2el"] == {"le=0.3": 1.0, "le=+Inf": 3.0, "count": 3.0, "sum": 1.5}
    assert (s.ok, s.failed, s.first_error) == (1, 0, None)
    assert s.scrape_seconds > 0
    assert seen.headers[-1].get("Accept") == "text/plain"
    assert "Authorization" not in seen.headers[-1]
    status = s.status()
    assert status == {
        "name": "srv",
        "url": f"{base}/metrics",
        "kind": "vllm",
        "ok": 1,
        "failed": 0,
        "first_error": None,
        "scrape_seconds": status["scrape_seconds"],
    }


def test_selector_and_given_kind(metrics_server: tuple[str, Seen]) -> None:
    base, _ = metrics_server
    s = scraper(f"{base}/metrics", kind="vllm", selector={"pod": "b"})
    snap = s.scrape()
    assert snap is not None
    assert snap.values["server.queue_waiting"] == {"": 5.0}
    assert "server.e2el" not in snap.values
    s = scraper(f"{base}/dcgm", selector={"pod": "=~p|q"})
    snap = s.scrape()
    assert s.kind == "dcgm"
    assert snap is not None
    assert snap.values["gpu.utilization"] == {
        "Hostname=n1,gpu=0,UUID=GPU-a": 0.5,
        "Hostname=n1,gpu=1,UUID=GPU-b": 1.0,
    }


def test_http_404(metrics_server: tuple[str, Seen]) -> None:
    base, _ = metrics_server
    s = scraper(f"{base}/nothing-here")
    assert s.scrape() is None
    assert s.scrape() is None
    assert (s.ok, s.failed) == (0, 2)
    assert s.first_error is not None
    assert s.first_error.startswith("HTTP 404 ")
    assert s.first_error == "HTTP 404 Not Found"
    assert s.kind is None


def test_first_error_is_kept_verbatim(metrics_server: tuple[str, Seen]) -> None:
    base, _ = metrics_server
    s = scraper(f"{base}/boom")
    assert s.scrape() is None
    s.url = f"{base}/nothing-here"
    assert s.scrape() is None
    assert s.first_error == "HTTP 500 Internal Server Error"
    assert s.failed == 2


def test_connection_refused() -> None:
    s = scraper(f"http://127.0.0.1:{free_port()}/metrics")
    began = time.monotonic()
    assert s.scrape() is None
    assert time.monotonic() - began < 2.0
    assert s.first_error is not None
    assert s.first_error.startswith("unreachable: ")
    assert "refused" in s.first_error.lower()
    assert s.status()["failed"] == 1


def test_page_without_known_metrics(metrics_server: tuple[str, Seen]) -> None:
    base, _ = metrics_server
    s = scraper(f"{base}/other")
    assert s.scrape() is None
    assert s.kind is None
    assert s.first_error == (
        "the page has none of the vllm:*, llamacpp:*, litellm_* or DCGM_FI_* metrics"
    )
    assert (s.ok, s.failed) == (0, 1)
    s.url = f"{base}/metrics"  # the server came up: detection is tried again
    assert s.scrape() is not None
    assert s.kind == "vllm"


def test_a_page_that_is_not_exposition_text(metrics_server: tuple[str, Seen]) -> None:
    base, _ = metrics_server
    s = scraper(f"{base}/html")
    assert s.scrape() is None
    assert s.first_error is not None
    assert s.first_error.startswith("ValueError: ")


def test_bearer_header_is_sent(
    metrics_server: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, seen = metrics_server
    monkeypatch.setenv("TEST_SCRAPE_API_KEY", "sk-test-123")
    s = scraper(f"{base}/metrics", api_key_env="TEST_SCRAPE_API_KEY")
    assert s.scrape() is not None
    assert seen.headers[-1].get("Authorization") == "Bearer sk-test-123"


def test_no_bearer_header_when_the_variable_is_unset(
    metrics_server: tuple[str, Seen], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, seen = metrics_server
    monkeypatch.delenv("TEST_SCRAPE_API_KEY", raising=False)
    s = scraper(f"{base}/metrics", api_key_env="TEST_SCRAPE_API_KEY")
    assert s.scrape() is not None
    assert "Authorization" not in seen.headers[-1]


def test_slow_page_times_out(metrics_server: tuple[str, Seen]) -> None:
    base, _ = metrics_server
    s = Scraper(name="srv", url=f"{base}/slow", kind="vllm", timeout_s=0.2)
    began = time.monotonic()
    assert s.scrape() is None
    assert time.monotonic() - began < 2.0
    assert s.first_error is not None
    assert "timed out" in s.first_error


def test_page_cut_short_is_a_failure(metrics_server: tuple[str, Seen]) -> None:
    base, _ = metrics_server
    s = scraper(f"{base}/truncated", kind="vllm")
    assert s.scrape() is None
    assert s.failed == 1


def test_not_an_http_server_is_a_failure(garbage_server: str) -> None:
    s = scraper(garbage_server)
    assert s.scrape() is None
    assert s.failed == 1


def test_non_numeric_le_is_a_failure(metrics_server: tuple[str, Seen]) -> None:
    base, _ = metrics_server
    s = scraper(f"{base}/bad-le")
    assert s.scrape() is None
    assert s.failed == 1
