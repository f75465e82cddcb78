"""One OpenAI-compatible request on the wire: send, time every content line, classify.

The hot path of the load generator. Inside a Locust FastHttpUser it uses the user's
geventhttpclient pool; every content line is stamped with time.monotonic() as it arrives.
It knows nothing of schedules or phases: it returns an Exchange and the driver makes the
record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gevent
from geventhttpclient.client import HTTPClient
from geventhttpclient.response import HTTPParseError

from harness.load.openai_api import Endpoint, gateway_route
from harness.load.sse import StreamState, parse_completion_text
from harness.load.streaming import RawStream, open_stream
from harness.records.record import ErrorClass

_CONNECT_ERRORS = (OSError, HTTPParseError)  # OSError covers refused, reset, DNS

#: Longest error_detail kept in a record (after the API key is taken out of it).
DETAIL_LIMIT = 240


class _Deadline(Exception):
    """The whole-request deadline passed (distinct from gevent.Timeout used elsewhere)."""


@dataclass(slots=True)
class Exchange:
    """What one request did, in the load generator's monotonic clock."""

    wall_sent: float
    t_sent: float
    t_done: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    status: int | None = None
    error: ErrorClass | None = None
    error_detail: str = ""
    reply_text: str | None = None  # only when asked for (multi-turn workloads)
    served_by: str | None = None  # the gateway's deployment (harness.load.openai_api)
    fallbacks: int | None = None
    retries: int | None = None
    served_model: str | None = None  # the model the body named


class Cut(gevent.GreenletExit):  # type: ignore[misc]  # gevent ships no stubs for it
    """The request's greenlet was killed (drain timeout, stop); carries what it measured."""

    def __init__(self, exchange: Exchange) -> None:
        super().__init__()
        self.exchange = exchange


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """Per-run constants of the client."""

    endpoint: Endpoint
    stream: bool
    request_timeout_s: float


#: The request's id on the wire, so a server's logs (vLLM with --enable-request-id-headers,
#: gateways, proxies) name the record it belongs to: "<run id>-<request id>".
REQUEST_ID_HEADER = "X-Request-Id"


def send(
    http: HTTPClient,
    opts: RequestOptions,
    body: bytes,
    cut_reason: str,
    want_text: bool = False,
    request_id: str | None = None,
) -> Exchange:
    """Send one request and read its answer; always returns an Exchange (or raises Cut)."""
    ep = opts.endpoint
    state = StreamState(collect_text=want_text)
    stream: RawStream | None = None
    ex = Exchange(wall_sent=time.time(), t_sent=time.monotonic())
    try:
        with gevent.Timeout(opts.request_timeout_s, _Deadline):
            stream = open_stream(http, ep.path, ep.headers, body, request_id, REQUEST_ID_HEADER)
            ex.status = stream.status
            ex.served_by, ex.fallbacks, ex.retries = gateway_route(stream.header)
            if not 200 <= ex.status < 300:
                text = stream.read_all(2048).decode("utf-8", "replace")
                ex.error, ex.error_detail = ErrorClass.HTTP_STATUS, f"HTTP {ex.status}: {text}"
            elif opts.stream:
                _read_stream(stream, state)
                ex.error, ex.error_detail = state.error, state.error_detail
            else:
                raw = stream.read_all()
                now = time.monotonic()
                answer = parse_completion_text(raw)
                state.prompt_tokens, state.output_tokens = answer[:2]
                state.model = answer.model
                if answer.text is not None:
                    state.chunk_times.append(now)
                    if want_text:
                        state.text_parts.append(answer.text)
                else:
                    ex.error, ex.error_detail = ErrorClass.MALFORMED_CHUNK, answer.problem
    except _Deadline:
        ex.error = ErrorClass.TIMEOUT
        ex.error_detail = f"no complete answer within {opts.request_timeout_s:g} s"
    except gevent.GreenletExit:
        if stream is not None:
            stream.abort()
        _close(ex, state, ErrorClass.INCOMPLETE, cut_reason)
        raise Cut(ex) from None
    except TimeoutError as exc:
        ex.error, ex.error_detail = ErrorClass.TIMEOUT, f"network timeout: {exc}"
    except _CONNECT_ERRORS as exc:
        ex.error = ErrorClass.BROKEN_STREAM if ex.status is not None else ErrorClass.CONNECT
        ex.error_detail = f"{type(exc).__name__}: {exc}"
    if stream is not None and (ex.error is not None or (opts.stream and not state.done)):
        stream.abort()  # never hand a half-read connection back to the pool
    _close(ex, state, ex.error, ep.redact(ex.error_detail, DETAIL_LIMIT))
    return ex


def _read_stream(stream: RawStream, state: StreamState) -> None:
    feed = state.feed

    def take(line: bytes, now: float) -> bool:
        feed(line, now)
        return state.done or state.error is not None

    stream.pump(take)
    while not (state.done or state.error is not None):
        lines = stream.read_lines()
        if not lines:
            break
        now = stream.arrived
        for line in lines:
            if line:  # every SSE event ends with a blank line: nothing to feed
                feed(line, now)
                if state.done or state.error is not None:
                    break
    if state.done:
        stream.finish()  # keep-alive: the next request reuses this connection
    state.finish()


def _close(ex: Exchange, state: StreamState, error: ErrorClass | None, detail: str) -> None:
    ex.t_done = time.monotonic()
    ex.chunk_times = state.chunk_times
    ex.prompt_tokens = state.prompt_tokens
    ex.output_tokens = state.output_tokens
    ex.served_model = state.model
    ex.error = error
    ex.error_detail = detail
    if state.collect_text:
        ex.reply_text = "".join(state.text_parts)
