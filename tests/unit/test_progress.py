"""The live progress line: its numbers, its rendering, and a writer that never raises."""

from __future__ import annotations

import io
import math

import gevent
import pytest

from harness.load.progress import (
    LiveStats,
    LogHistogram,
    ProgressLine,
    ProgressSnapshot,
    render_progress,
)
from harness.records.record import ErrorClass, RequestRecord


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def record(
    ttft: float | None = 0.1, error: ErrorClass | None = None, stream: bool = True
) -> RequestRecord:
    t_sent = 50.0
    first = None if ttft is None else t_sent + ttft
    return RequestRecord(
        request_id=0,
        worker="local",
        phase="measure",
        stream=stream,
        wall_sent=0.0,
        t_intended=None,
        t_sent=t_sent,
        t_first=first,
        t_last=first,
        t_done=t_sent + 1.0,
        chunk_times=() if first is None else (first,),
        prompt_tokens=None,
        output_tokens=None,
        status=None if error else 200,
        error=error,
    )


def test_counts_in_flight_errors_and_ttft_of_successful_streams_only() -> None:
    clock = Clock()
    stats = LiveStats(clock=clock)
    for _ in range(10):
        stats.sent()
    clock.now += 2.0
    for ms in range(1, 101):
        stats.observe(record(ttft=ms / 1000))  # 1..100 ms
    # Sent 10 but observed 100 (a relay without sent() calls): never a negative in-flight.
    assert stats.snapshot().in_flight == 0
    for _ in range(200):
        stats.sent()
    stats.observe(record(ttft=None, error=ErrorClass.TIMEOUT))
    stats.observe(record(ttft=30.0, stream=False))  # not a TTFT: the stream was off
    snap = stats.snapshot()
    assert (snap.sent, snap.completed, snap.errors, snap.in_flight) == (210, 102, 1, 108)
    assert snap.ttft_p50_s == pytest.approx(0.050, rel=0.03)
    assert snap.ttft_p99_s == pytest.approx(0.099, rel=0.03)


def test_rate_counts_completions_in_the_last_window_only() -> None:
    clock = Clock()
    stats = LiveStats(window_s=5.0, clock=clock)
    assert stats.snapshot().rate == 0.0
    clock.now += 2.0
    for _ in range(10):
        stats.observe(record())
    assert stats.snapshot().rate == pytest.approx(10 / 2.0)  # young run: over its 2 s so far
    clock.now += 4.0  # 6 s in: the window is full
    for _ in range(20):
        stats.observe(record())
    assert stats.snapshot().rate == pytest.approx(30 / 5.0)
    clock.now += 1.5  # the first ten are now older than 5 s
    assert stats.snapshot().rate == pytest.approx(20 / 5.0)
    clock.now += 10.0
    snap = stats.snapshot()
    assert snap.rate == 0.0
    assert snap.completed == 30
    assert snap.elapsed_s == pytest.approx(17.5)


def test_histogram_quantiles_stay_within_its_bucket_error() -> None:
    hist = LogHistogram()
    assert hist.quantile(0.5) is None
    values = [0.001 * 1.013**i for i in range(600)]  # 1 ms .. ~2.3 s, log-spread
    for v in values:
        hist.add(v)
    for q in (0.01, 0.5, 0.9, 0.99):
        exact = sorted(values)[math.ceil(q * len(values)) - 1]
        got = hist.quantile(q)
        assert got is not None
        assert got == pytest.approx(exact, rel=0.026), q


def test_histogram_clamps_out_of_range_values() -> None:
    hist = LogHistogram()
    for v in (-1.0, 0.0, float("nan"), 1e-9):
        hist.add(v)
    assert hist.quantile(1.0) == pytest.approx(LogHistogram.LOW, rel=0.03)
    hist.add(1e9)
    assert hist.quantile(1.0) == pytest.approx(LogHistogram.LOW * 1.05**339.5)
    assert hist.count == 5


def snapshot(**kw: float | int | None) -> ProgressSnapshot:
    base: dict[str, float | int | None] = {
        "elapsed_s": 72.9,
        "sent": 600,
        "completed": 590,
        "errors": 0,
        "in_flight": 10,
        "rate": 8.04,
        "ttft_p50_s": 0.095,
        "ttft_p99_s": 0.18,
    }
    base.update(kw)
    return ProgressSnapshot(**base)  # type: ignore[arg-type]


def test_render_a_healthy_run() -> None:
    line = render_progress(snapshot())
    assert line == "1:12  8.0 req/s  10 in flight  TTFT p50 95 ms p99 180 ms  0 errors"
    long = render_progress(snapshot(elapsed_s=36000.0, rate=12345.6, in_flight=99999, errors=12345,
                           ttft_p50_s=0.12345, ttft_p99_s=12.345))  # fmt: skip
    assert "TTFT p50 123 ms p99 12.3 s" in long
    assert len(long) < 100


def test_render_errors_no_ttft_and_hours() -> None:
    line = render_progress(snapshot(elapsed_s=3725.0, errors=59, ttft_p50_s=None, ttft_p99_s=None))
    assert line.startswith("1:02:05  ")
    assert "TTFT —" in line
    assert "59 errors (10 %)" in line


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class Broken(FakeTerminal):
    def write(self, s: str) -> int:
        raise BrokenPipeError("closed")


# gevent without monkey-patching: its loop runs only while this test waits in gevent.sleep.
def test_terminal_line_is_rewritten_in_place_and_ended_on_stop() -> None:
    stats = LiveStats()
    out = FakeTerminal(tty=True)
    line = ProgressLine(stats, tty_every_s=0.02, plain_every_s=10.0)
    line.start(out)
    gevent.sleep(0.07)
    line.stop()
    text = out.getvalue()
    assert text.count("\r") >= 2
    assert "\n" not in text[:-1]
    assert text.endswith("\n")
    assert "0 in flight" in text


def test_a_log_gets_plain_lines_at_the_slower_pace() -> None:
    out = FakeTerminal(tty=False)
    line = ProgressLine(LiveStats(), tty_every_s=0.01, plain_every_s=0.03)
    line.start(out)
    gevent.sleep(0.1)
    line.stop()
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 4
    assert "\r" not in out.getvalue()


def test_a_failing_stream_never_raises_into_the_run(capfd: pytest.CaptureFixture[str]) -> None:
    line = ProgressLine(LiveStats(), tty_every_s=0.01)
    line.start(Broken(tty=True))
    gevent.sleep(0.05)  # the write fails: the greenlet ends quietly
    line.stop()  # and stopping after that is fine too
    assert "Traceback" not in capfd.readouterr().err  # gevent would print a greenlet's error
