"""Reading the servers' metrics from Prometheus: ``prometheus.read`` driven by a fake ``Query``
(no network, a fake clock), and ``ApiClientQuery`` against loopback servers that refuse,
stall or answer NaN. Every failure must end as a reason, never an exception or a zero."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from support.http_stub import serving
from support.proc import free_port

from harness.collectors import prometheus
from harness.collectors.families import FAMILIES, ServerKind
from harness.collectors.prometheus import ApiClientQuery, PrometheusError, newest_sample
from harness.collectors.promql import family_query
from harness.collectors.window import window

SELECTOR = {"namespace": "prod", "pod": "=~llama-predictor-.*"}
START, END, STEP = 1000.0, 1010.0, 1.0
DOWN = "Prometheus at http://prom.example:9090 is unreachable"
SLOW = "Prometheus at http://prom.example:9090 did not answer in time"


@dataclass
class Clock:
    """``now`` and ``sleep`` for ``read``: sleeping moves the clock, nothing waits."""

    t: float = END + 0.25
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 1.0
        self.slept.append(seconds)
        self.t += seconds


def matrix(labels: dict[str, str], values: dict[float, str]) -> dict[str, Any]:
    return {"metric": labels, "values": [[t, v] for t, v in sorted(values.items())]}


GRID = [START + i for i in range(13)]  # 1000 .. 1012: through END and one step past it
_TTFT = "vllm:time_to_first_token_seconds"


def healthy_vllm() -> dict[str, list[dict[str, Any]]]:
    """Range results of a busy vLLM: 2 requests per second, every TTFT under 0.5 s."""
    count = {t: str(2 * (t - START)) for t in GRID}
    return {
        "server.ttft": [
            matrix({"__name__": f"{_TTFT}_bucket", "le": "0.1"}, dict.fromkeys(GRID, "0")),
            matrix({"__name__": f"{_TTFT}_bucket", "le": "0.5"}, count),
            matrix({"__name__": f"{_TTFT}_bucket", "le": "+Inf"}, count),
            matrix({"__name__": f"{_TTFT}_count"}, count),
            matrix({"__name__": f"{_TTFT}_sum"}, {t: str(0.3 * 2 * (t - START)) for t in GRID}),
        ],
        "server.queue_waiting": [
            matrix({"__name__": "vllm:num_requests_waiting"}, dict.fromkeys(GRID, "3"))
        ],
        "server.requests": [
            matrix({"__name__": "vllm:request_success_total", "finished_reason": "stop"}, count),
        ],
    }


@dataclass
class FakePrometheus:
    """A ``Query`` that answers the reader's queries from canned data.

    ``names``: the metric names held (for detection); ``newest``: the newest sample time at
    a given clock time (None: no series); ``results``: range results by family metric;
    ``fail``: a message every call raises; ``fail_family``: messages by family metric.
    """

    kind: ServerKind
    selector: dict[str, str]
    clock: Clock
    names: tuple[str, ...] = ()
    newest: Callable[[float], float | None] = lambda now: END + 1.5
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fail: str | None = None
    fail_family: dict[str, str] = field(default_factory=dict)
    instants: list[tuple[str, float]] = field(default_factory=list)
    ranges: list[tuple[str, float, float, float]] = field(default_factory=list)

    def _family(self, promql: str) -> str:
        by_query = {family_query(f, self.selector): f.metric for f in FAMILIES[self.kind]}
        assert promql in by_query, f"unexpected range query {promql}"
        return by_query[promql]

    def instant(self, promql: str, at: float) -> list[dict[str, Any]]:
        self.instants.append((promql, at))
        assert at == self.clock.t  # asked as of now
        if self.fail:
            raise PrometheusError(self.fail)
        if promql.startswith("count by (__name__)"):
            return [{"metric": {"__name__": n}, "value": [at, "1"]} for n in self.names]
        assert promql.startswith("max(timestamp("), promql
        newest = self.newest(at)
        return [] if newest is None else [{"metric": {}, "value": [at, repr(newest)]}]

    def range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        self.ranges.append((promql, start, end, step))
        metric = self._family(promql)
        if self.fail:
            raise PrometheusError(self.fail)
        if metric in self.fail_family:
            raise PrometheusError(self.fail_family[metric])
        # Prometheus answers the points inside the range (the client rounds its bounds).
        lo, hi = round(start), round(end)
        return [
            {**series, "values": [[t, v] for t, v in series["values"] if lo <= t <= hi]}
            for series in self.results.get(metric, [])
        ]


def run(
    fake: FakePrometheus, kind: ServerKind | None, settle_s: float = 5.0
) -> prometheus.PrometheusRead:
    return prometheus.read(
        fake,
        kind,
        fake.selector,
        START,
        END,
        STEP,
        settle_s,
        sleep=fake.clock.sleep,
        now=fake.clock.now,
    )


# --- (a) a healthy Prometheus ---------------------------------------------------------------


def test_healthy_prometheus_gives_snapshots_over_the_grid() -> None:
    clock = Clock()
    fake = FakePrometheus("vllm", SELECTOR, clock, results=healthy_vllm())
    out = run(fake, "vllm")
    assert out.kind == "vllm"
    assert out.problems == {}
    assert out.notes == []
    assert clock.slept == []  # Prometheus had already scraped past the end
    # One range query per family, over a grid through END reaching the newest sample.
    assert [q for q, *_ in fake.ranges] == [family_query(f, SELECTOR) for f in FAMILIES["vllm"]]
    assert {(s, e, st) for _, s, e, st in fake.ranges} == {(START, END + 2 * STEP, STEP)}
    assert out.queries == {f.metric: family_query(f, SELECTOR) for f in FAMILIES["vllm"]}
    assert [s.wall for s in out.snapshots] == GRID
    at_end = out.snapshots[10]
    assert at_end.wall == END
    assert at_end.values["server.queue_waiting"] == {"": 3.0}
    assert at_end.values["server.requests"] == {"finished_reason=stop": 20.0}
    assert at_end.values["server.ttft"]["le=0.5"] == 20.0
    assert at_end.names["server.ttft"] == _TTFT


def test_healthy_read_gives_the_window() -> None:
    fake = FakePrometheus("vllm", SELECTOR, Clock(), results=healthy_vllm())
    out = run(fake, "vllm")
    w = window(out.snapshots, FAMILIES["vllm"], START + 2, END, stale_s=2 * STEP)
    assert (w.start_at, w.end_at) == (START + 2, END)
    assert w.counter_total("server.requests") == 16.0
    hist = w.histograms["server.ttft"]
    assert hist.count == 16.0
    assert hist.share_under(0.5) == (1.0, 1.0, 1.0)


def test_newest_sample_is_asked_with_the_selector() -> None:
    fake = FakePrometheus("vllm", SELECTOR, Clock())
    run(fake, "vllm")
    freshness = [q for q, _ in fake.instants if q.startswith("max(timestamp(")]
    assert freshness
    assert all('namespace="prod",pod=~"llama-predictor-.*"' in q for q in freshness)


# --- (b) detection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        (("vllm:num_requests_running", f"{_TTFT}_bucket"), "vllm"),
        (("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"), "dcgm"),
        (("litellm_deployment_state",), "litellm"),
        (("llamacpp:requests_processing",), "llamacpp"),
    ],
)
def test_kind_is_detected_when_not_given(names: tuple[str, ...], kind: ServerKind) -> None:
    fake = FakePrometheus(kind, SELECTOR, Clock(), names=names)
    out = run(fake, None)
    assert out.kind == kind
    assert out.problems == {}
    detect_query = fake.instants[0][0]
    assert detect_query.startswith("count by (__name__) ({__name__=~")
    assert 'namespace="prod",pod=~"llama-predictor-.*"' in detect_query
    assert [q for q, *_ in fake.ranges] == [family_query(f, SELECTOR) for f in FAMILIES[kind]]


# --- (c) no series ------------------------------------------------------------------------


def test_no_series_at_all_when_detecting() -> None:
    fake = FakePrometheus("vllm", SELECTOR, Clock(), names=())
    out = run(fake, None)
    assert out.kind is None
    assert "no vllm:*, llamacpp:*, litellm_* or DCGM_FI_* series" in out.problems["*"]
    assert 'matching namespace="prod",pod=~"llama-predictor-.*"' in out.problems["*"]
    assert out.snapshots == []
    assert fake.ranges == []


def test_no_series_of_the_given_kind() -> None:
    clock = Clock()
    fake = FakePrometheus("vllm", SELECTOR, clock, newest=lambda now: None)
    out = run(fake, "vllm", settle_s=5.0)
    assert set(out.problems) == {"*"}
    assert "no vllm series" in out.problems["*"]
    assert "waited 5 s" in out.problems["*"]
    assert fake.ranges == []
    assert out.snapshots == []
    assert 5.0 <= sum(clock.slept) <= 6.0


# --- (d) Prometheus down ------------------------------------------------------------------


@pytest.mark.parametrize("kind", [None, "vllm", "dcgm"])
def test_prometheus_down_is_a_problem_not_an_exception(kind: ServerKind | None) -> None:
    fake = FakePrometheus(kind or "vllm", SELECTOR, Clock(), fail=DOWN)
    out = run(fake, kind)
    assert out.problems == {"*": DOWN}
    assert out.snapshots == []
    assert out.kind == kind
    assert fake.ranges == []


def test_prometheus_going_down_after_detection() -> None:
    fake = FakePrometheus(
        "vllm", SELECTOR, Clock(), names=("vllm:num_requests_running",), results=healthy_vllm()
    )
    fake.fail_family = {f.metric: DOWN for f in FAMILIES["vllm"]}
    out = run(fake, None)
    assert out.kind == "vllm"
    assert out.problems == {f.metric: DOWN for f in FAMILIES["vllm"]}
    assert all(s.values == {} for s in out.snapshots)


# --- (e) freshness ------------------------------------------------------------------------


def test_stale_prometheus_gives_a_note_and_the_data() -> None:
    clock = Clock()
    fake = FakePrometheus(
        "vllm", SELECTOR, clock, newest=lambda now: END - 30.0, results=healthy_vllm()
    )
    began = time.monotonic()
    out = run(fake, "vllm", settle_s=10.0)
    assert time.monotonic() - began < 1.0  # the fake clock, no real waiting
    assert 10.0 <= sum(clock.slept) <= 11.0
    assert len(out.notes) == 1
    assert "-30.0 s from the run's end" in out.notes[0]
    assert "waited 10 s" in out.notes[0]
    assert out.problems == {}
    assert {(s, e) for _, s, e, _ in fake.ranges} == {(START, END)}  # read anyway
    assert [s.wall for s in out.snapshots] == GRID[:11]
    assert out.snapshots[-1].values["server.queue_waiting"] == {"": 3.0}


def test_freshness_reached_while_waiting() -> None:
    clock = Clock()
    caught_up = clock.t + 3.0
    fake = FakePrometheus(
        "vllm",
        SELECTOR,
        clock,
        results=healthy_vllm(),
        newest=lambda now: END + 1.5 if now >= caught_up else END - 2.0,
    )
    out = run(fake, "vllm", settle_s=10.0)
    assert out.notes == []
    assert out.problems == {}
    assert 3.0 <= sum(clock.slept) < 4.0


def test_sleeps_are_bounded_by_the_step() -> None:
    clock = Clock()
    fake = FakePrometheus("vllm", SELECTOR, clock, newest=lambda now: None)
    prometheus.read(fake, "vllm", SELECTOR, START, END, 0.25, 2.0, sleep=clock.sleep, now=clock.now)
    assert clock.slept
    assert set(clock.slept) == {0.25}


def test_stale_note_never_gives_a_negative_age() -> None:
    fake = FakePrometheus(
        "vllm", SELECTOR, Clock(), newest=lambda now: END + 0.5, results=healthy_vllm()
    )
    out = run(fake, "vllm", settle_s=3.0)
    assert out.notes
    assert not re.search(r"-\d", out.notes[0]), out.notes[0]


# --- (f) one family failing -----------------------------------------------------------------


def test_one_slow_family_is_its_own_problem() -> None:
    fake = FakePrometheus(
        "vllm", SELECTOR, Clock(), results=healthy_vllm(), fail_family={"server.ttft": SLOW}
    )
    out = run(fake, "vllm")
    assert out.problems == {"server.ttft": SLOW}
    assert "server.ttft" in out.queries
    assert len(fake.ranges) == len(FAMILIES["vllm"])  # the others were still asked
    assert all("server.ttft" not in s.values for s in out.snapshots)
    assert out.snapshots[10].values["server.queue_waiting"] == {"": 3.0}
    assert out.snapshots[10].values["server.requests"] == {"finished_reason=stop": 20.0}


# --- (g) NaN and (h) empty results ------------------------------------------------------------


def test_nan_points_are_dropped_never_zero() -> None:
    results = healthy_vllm()
    waiting = {t: ("NaN" if t in (START + 3, START + 4) else "3") for t in GRID}
    results["server.queue_waiting"] = [matrix({"__name__": "vllm:num_requests_waiting"}, waiting)]
    results["server.kv_cache_usage"] = [
        matrix({"__name__": "vllm:kv_cache_usage_perc"}, dict.fromkeys(GRID, "NaN"))
    ]
    fake = FakePrometheus("vllm", SELECTOR, Clock(), results=results)
    out = run(fake, "vllm")
    by_wall = {s.wall: s for s in out.snapshots}
    for t in GRID:
        got = by_wall[t].values.get("server.queue_waiting")
        assert got == (None if t in (START + 3, START + 4) else {"": 3.0}), t
    assert all("server.kv_cache_usage" not in s.values for s in out.snapshots)
    assert "NaN" in out.problems["server.kv_cache_usage"]
    assert set(out.problems) == {"server.kv_cache_usage"}


def test_empty_result_leaves_the_family_absent() -> None:
    results = healthy_vllm()
    results["server.queue_waiting"] = []
    fake = FakePrometheus("vllm", SELECTOR, Clock(), results=results)
    out = run(fake, "vllm")
    assert out.problems == {}
    assert out.snapshots
    assert all("server.queue_waiting" not in s.values for s in out.snapshots)
    assert all("server.kv_cache_usage" not in s.values for s in out.snapshots)
    w = window(out.snapshots, FAMILIES["vllm"], START, END, stale_s=2.0)
    assert "server.ttft" in w.histograms


# --- ApiClientQuery against loopback servers ----------------------------------------------------

NAN_VECTOR = {
    "status": "success",
    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "NaN"]}]},
}
UP_SERIES: list[dict[str, Any]] = [
    {"metric": {"__name__": "up"}, "values": [[1000, "1"], [1001, "1"]]}
]
MATRIX = {"status": "success", "data": {"resultType": "matrix", "result": UP_SERIES}}
BAD_QUERY = {"status": "error", "errorType": "bad_data", "error": "parse error"}


@dataclass
class Seen:
    requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Handler(BaseHTTPRequestHandler):
    seen: Seen

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parts.query)
        self.seen.requests.append((parts.path, query, dict(self.headers.items())))
        mode = parts.path.split("/")[1]
        if mode == "slow":
            self.seen.release.wait(timeout=5.0)  # bounded; released at teardown
        if mode == "error":
            self._json(400, BAD_QUERY)
        elif parts.path.endswith("/api/v1/query_range"):
            self._json(200, MATRIX)
        else:
            self._json(200, NAN_VECTOR)

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (the slow case)
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def prom_stub() -> Iterator[tuple[str, Seen]]:
    """A loopback stand-in for Prometheus' HTTP API: ``/<mode>/api/v1/...``."""
    seen = Seen()
    handler = type("Handler", (_Handler,), {"seen": seen})
    with serving(handler, before_stop=seen.release.set) as url:
        yield url, seen


def test_unreachable_prometheus() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    q = ApiClientQuery(url, timeout_s=2.0)
    began = time.monotonic()
    with pytest.raises(PrometheusError, match="unreachable") as err:
        q.instant("up", 1000.0)
    assert url in str(err.value)
    with pytest.raises(PrometheusError, match="unreachable"):
        q.range("up", 1000.0, 1010.0, 1.0)
    assert time.monotonic() - began < 2.0  # no retries


def test_slow_prometheus_did_not_answer_in_time(prom_stub: tuple[str, Seen]) -> None:
    base, seen = prom_stub
    q = ApiClientQuery(f"{base}/slow", timeout_s=0.2)
    began = time.monotonic()
    with pytest.raises(PrometheusError, match="did not answer in time"):
        q.instant("up", 1000.0)
    assert time.monotonic() - began < 2.0
    assert len(seen.requests) == 1  # no retry


def test_nan_instant_answer_is_returned_and_reads_as_no_sample(
    prom_stub: tuple[str, Seen],
) -> None:
    base, seen = prom_stub
    q = ApiClientQuery(f"{base}/nan", timeout_s=2.0, token="s3cret")
    assert q.instant("max(timestamp(up))", 1234.5) == [{"metric": {}, "value": [1, "NaN"]}]
    path, params, headers = seen.requests[-1]
    assert path == "/nan/api/v1/query"
    assert params["query"] == ["max(timestamp(up))"]
    assert float(params["time"][0]) == 1234.5
    assert headers.get("Authorization") == "Bearer s3cret"
    assert newest_sample(q, FAMILIES["vllm"][:1], {}, 1234.5) is None


def test_range_query_goes_to_query_range(prom_stub: tuple[str, Seen]) -> None:
    base, seen = prom_stub
    q = ApiClientQuery(f"{base}/ok", timeout_s=2.0)
    result = q.range("up", 1000.0, 1010.0, 2.0)
    assert result == UP_SERIES
    path, params, headers = seen.requests[-1]
    assert path == "/ok/api/v1/query_range"
    assert (params["start"], params["end"], params["step"]) == (["1000"], ["1010"], ["2"])
    assert "Authorization" not in headers


def test_error_answer_is_a_prometheus_error(prom_stub: tuple[str, Seen]) -> None:
    base, _ = prom_stub
    q = ApiClientQuery(f"{base}/error", timeout_s=2.0)
    with pytest.raises(PrometheusError, match=r"failed: .*400"):
        q.instant("up{", 1.0)


def _prometheus_accepts_step(step: str) -> bool:
    """Prometheus' API parses ``step`` as a float of seconds, or a duration of integers with
    units (model.ParseDuration: "1500ms", not "1.5s")."""
    try:
        float(step)
        return True
    except ValueError:
        return re.fullmatch(r"(\d+(y|w|d|h|m|s|ms))+", step) is not None


def test_sub_second_step_is_sent_in_a_form_prometheus_accepts(
    prom_stub: tuple[str, Seen],
) -> None:
    base, seen = prom_stub
    ApiClientQuery(f"{base}/ok", timeout_s=2.0).range("up", 1000.0, 1010.0, 0.5)
    step = seen.requests[-1][1]["step"][0]
    assert _prometheus_accepts_step(step), step


def test_whole_second_steps_are_accepted(prom_stub: tuple[str, Seen]) -> None:
    base, seen = prom_stub
    for step in (1.0, 2.0, 15.0, 60.0):
        ApiClientQuery(f"{base}/ok", timeout_s=2.0).range("up", 1000.0, 1010.0, step)
        assert _prometheus_accepts_step(seen.requests[-1][1]["step"][0])
