"""A live progress line during a run, so a person can see it is working and how it goes.

`LiveStats` is fed from the hot path (every record, every send), so both calls are O(1)
amortised; `ProgressLine` renders a snapshot once a second on a terminal and every ten
seconds in a CI log. The numbers are a glance, not a verdict: verdicts come from the records.
`ProgressLine` imports gevent only when started, so the rest is usable anywhere.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from harness.records.record import RequestRecord
from harness.spec.quantity import format_quantity


class LogHistogram:
    """Counts in fixed buckets growing by 5 %, from 0.1 ms to about 27 min (340 buckets).

    Chosen over a bounded reservoir: adding is O(1) with fixed memory however long the run,
    every sample counts, and every quantile is within ~2.5 % of the true value, where a
    1 000-sample reservoir's p99 rests on about ten samples and wanders from line to line.
    """

    LOW = 1e-4
    RATIO = 1.05
    BUCKETS = 340

    def __init__(self) -> None:
        self._counts = [0] * self.BUCKETS
        self.count = 0
        self._log_ratio = math.log(self.RATIO)

    def add(self, value: float) -> None:
        if not value > self.LOW:  # also NaN and negative: into the lowest bucket
            index = 0
        else:
            index = min(int(math.log(value / self.LOW) / self._log_ratio), self.BUCKETS - 1)
        self._counts[index] += 1
        self.count += 1

    def quantile(self, q: float) -> float | None:
        """The nearest-rank q-quantile as its bucket's geometric middle; None when empty."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                return self.LOW * math.pow(self.RATIO, index + 0.5)
        raise AssertionError("unreachable: the counts sum to count")


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """The numbers one progress line shows."""

    elapsed_s: float
    sent: int
    completed: int  # records observed, failed ones included
    errors: int
    in_flight: int
    rate: float  # completions per second over the last `window_s`
    ttft_p50_s: float | None  # successful streaming requests so far
    ttft_p99_s: float | None


class LiveStats:
    """Running counts for the progress line, fed by the load engine as it goes.

    ``clock`` is the clock of the calls (not of the records), so records relayed from other
    machines, whose monotonic clocks differ, still land in the right rate window.
    """

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._start = clock()
        self._recent: deque[float] = deque()  # completion times within the window
        self._ttft = LogHistogram()
        self.sent_count = 0
        self.completed = 0
        self.errors = 0

    def sent(self) -> None:
        """One request went out."""
        self.sent_count += 1

    def observe(self, record: RequestRecord) -> None:
        """One request ended (successfully or not)."""
        now = self._clock()
        self.completed += 1
        self._recent.append(now)
        self._prune(now)
        if record.error is not None:
            self.errors += 1
        elif record.stream and record.t_first is not None:
            self._ttft.add(record.t_first - record.t_sent)

    def _prune(self, now: float) -> None:
        horizon = now - self.window_s
        while self._recent and self._recent[0] <= horizon:
            self._recent.popleft()

    def snapshot(self) -> ProgressSnapshot:
        now = self._clock()
        self._prune(now)
        elapsed = now - self._start
        span = min(self.window_s, elapsed)
        return ProgressSnapshot(
            elapsed_s=elapsed,
            sent=self.sent_count,
            completed=self.completed,
            errors=self.errors,
            in_flight=max(0, self.sent_count - self.completed),
            rate=len(self._recent) / span if span > 0 else 0.0,
            ttft_p50_s=self._ttft.quantile(0.50),
            ttft_p99_s=self._ttft.quantile(0.99),
        )


def render_progress(snap: ProgressSnapshot) -> str:
    """One line, short enough for an 80-column terminal."""
    minutes, seconds = divmod(int(snap.elapsed_s), 60)
    hours, minutes = divmod(minutes, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    if snap.ttft_p50_s is None:
        ttft = "TTFT —"
    else:
        ttft = f"TTFT p50 {_short(snap.ttft_p50_s)} p99 {_short(snap.ttft_p99_s)}"
    errors = f"{snap.errors} errors"
    if snap.errors:
        errors += f" ({format_quantity(snap.errors / snap.completed, 'ratio')})"
    return f"{clock}  {snap.rate:.1f} req/s  {snap.in_flight} in flight  {ttft}  {errors}"


def _short(seconds: float | None) -> str:
    """Three digits: a glance needs no more."""
    if seconds is None:
        return "—"
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


class ProgressLine:
    """Rewrites one line every ``tty_every_s`` on a terminal; prints a plain line every
    ``plain_every_s`` elsewhere (CI logs keep every line, so fewer). It never raises into the
    run: a stream that fails (closed, broken pipe) only ends the progress output."""

    def __init__(
        self, stats: LiveStats, tty_every_s: float = 1.0, plain_every_s: float = 10.0
    ) -> None:
        self.stats = stats
        self.tty_every_s = tty_every_s
        self.plain_every_s = plain_every_s
        self._greenlet: Any = None
        self._stream: TextIO | None = None
        self._tty = False
        self._width = 0  # of the line now on the terminal, to blank what a shorter one leaves

    def start(self, stream: TextIO | None = None) -> None:
        """Start writing to stream (default: sys.stderr as it is at the call)."""
        import gevent

        self._stream = sys.stderr if stream is None else stream
        try:
            self._tty = bool(self._stream.isatty())
        except Exception:
            self._tty = False
        self._greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        import gevent

        every = self.tty_every_s if self._tty else self.plain_every_s
        while True:
            gevent.sleep(every)
            if not self._write_once():
                return

    def _write_once(self) -> bool:
        """Write one line; False (and nothing raised) when writing failed."""
        stream = self._stream
        if stream is None:
            return False
        try:
            line = render_progress(self.stats.snapshot())
            if self._tty:
                stream.write("\r" + line.ljust(self._width))
                self._width = len(line)
            else:
                stream.write(line + "\n")
            stream.flush()
        except Exception:
            self._stream = None
            return False
        return True

    def stop(self) -> None:
        """Stop updating; on a terminal, end the line so the last figures stay visible."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None
        if self._tty and self._width and self._stream is not None:
            try:
                self._stream.write("\n")
                self._stream.flush()
            except Exception:
                self._stream = None
        self._width = 0
