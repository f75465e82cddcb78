"""Saturation guard: a load generator that cannot keep up must never produce a verdict.

A gevent load generator timestamps chunks and sends arrivals from one event loop. When that
loop is busy, every greenlet wakes late, so every timestamp is late: the latencies measure
the client, not the server. Each generator process therefore runs a `LoadGuard` that samples
its own event-loop wake-up lag and CPU use during the run; `assess` turns the report (and the
dispatch lag the caller computes from records) into the reasons the run is INVALID (exit 4).

`LoadGuard` imports gevent only when started, so `GuardReport`, `Thresholds` and `assess` can
be used anywhere, e.g. to re-judge a stored run from its manifest.
"""

from __future__ import annotations

import random
import time
from array import array
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class GuardReport:
    """What one generator process measured about itself. Stats are None without samples."""

    interval_s: float  # intended sleep between lag samples
    duration_s: float  # guard start to stop
    samples: int  # event-loop lag samples
    lag_p50_s: float | None  # wake-up lag: actual minus intended wake time (monotonic)
    lag_p99_s: float | None
    lag_max_s: float | None
    cpu_samples: int  # CPU windows of about `cpu_every_s` each
    cpu_mean: float | None  # process CPU (user + system) as a fraction of one core
    cpu_p95: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for the manifest and for shipping from a worker to the master."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardReport:
        def opt(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            interval_s=float(data["interval_s"]),
            duration_s=float(data["duration_s"]),
            samples=int(data["samples"]),
            lag_p50_s=opt("lag_p50_s"),
            lag_p99_s=opt("lag_p99_s"),
            lag_max_s=opt("lag_max_s"),
            cpu_samples=int(data["cpu_samples"]),
            cpu_mean=opt("cpu_mean"),
            cpu_p95=opt("cpu_p95"),
        )


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a load generator stops being trustworthy (real-components.md, Locust).

    lag_p99_s, 10 ms: measured here, greenlet wake-up lag p99 tracks the ITL error of the
    streams the loop reads: 1.3 ms at 64 streams, 3.3 ms at 256 (busy, still sound) and 27 ms
    at 512 (past the ~37 000 chunks/s one core can read). 10 ms is three times the busy-but-sound
    figure and well under the saturated one; above it one timestamp in a hundred is off by as
    much as a GPU's whole inter-token gap (10-50 ms).

    cpu_p95, 90 % of one core: a gevent process runs Python on one core whatever the machine
    has, and near full use the loop has no slack, so lag grows steeply with any burst (the
    queueing wait grows like u / (1 - u)). 90 % is also where Locust warns, but Locust samples
    every 10 s and was seen silent at 99 %; p95 of ~0.5 s windows catches a saturated stage
    without one slow window (a GC pass, a first-request import) invalidating a run.

    dispatch_lag_p99_s, 50 ms: one generator here holds 800 req/s with p99 dispatch lag 5 ms;
    ten times that means the arrival process the scenario asked for was not the one sent, and
    it is a tenth of the runbook's tightest latency target (p50 E2EL 500 ms).
    """

    lag_p99_s: float = 0.010
    cpu_p95: float = 0.90
    dispatch_lag_p99_s: float = 0.050


def assess(
    report: GuardReport,
    dispatch_lag_p99_s: float | None = None,
    thresholds: Thresholds = Thresholds(),  # frozen: a shared default is safe
) -> list[str]:
    """The reasons the run is invalid, one sentence each; empty when the generator kept up.

    ``dispatch_lag_p99_s`` (send minus intended time, p99) must come only from arrivals that
    were not held back by the scenario's own concurrency cap, where lateness is by design;
    None when there were none (closed loop) or it was not computed.
    """
    reasons: list[str] = []
    lag = report.lag_p99_s
    if lag is not None and lag > thresholds.lag_p99_s:
        reasons.append(
            f"load generator saturated: event-loop lag p99 {_ms(lag)} > "
            f"{_ms(thresholds.lag_p99_s)} (timestamps would be late by that much)"
        )
    cpu = report.cpu_p95
    if cpu is not None and cpu >= thresholds.cpu_p95:
        reasons.append(
            f"load generator CPU p95 {_pct(cpu)} of one core >= {_pct(thresholds.cpu_p95)}"
        )
    if dispatch_lag_p99_s is not None and dispatch_lag_p99_s > thresholds.dispatch_lag_p99_s:
        reasons.append(
            f"dispatch lag p99 {_ms(dispatch_lag_p99_s)} > "
            f"{_ms(thresholds.dispatch_lag_p99_s)}: arrivals were sent late"
        )
    return reasons


class LoadGuard:
    """Samples this process's event-loop wake-up lag and CPU use from a greenlet.

    Start it in the gevent-patched load process just before load starts and stop it once the
    load (and its drain) is over, so set-up and reporting do not count. The cost is one
    wake-up every ``interval_s`` (20 a second by default), negligible beside the requests.

    Sampling times are drawn in advance (jittered around ``interval_s``) rather than counted
    from each wake-up, so they do not depend on the loop's state: the lags are what an event
    arriving at a random moment (a chunk, an arrival) waits. Sleeping ``interval_s`` from each
    wake-up locks in phase with a periodic hog and under-reports it (a loop busy 60 ms at a
    time read as ~10 ms), and a stall would count once however long it lasted.

    CPU comes from ``time.process_time()`` (user + system, all threads), the same sum
    psutil's ``cpu_times()`` gives, at nanosecond rather than clock-tick resolution.
    """

    def __init__(self, interval_s: float = 0.05, cpu_every_s: float = 0.5) -> None:
        if interval_s <= 0 or cpu_every_s <= 0:
            raise ValueError("interval_s and cpu_every_s must be > 0")
        self.interval_s = interval_s
        self.cpu_every_s = cpu_every_s
        self._lags = array("d")
        self._cpu = array("d")
        self._greenlet: Any = None
        self._started = 0.0
        self._gap = random.Random(0).uniform  # fixed seed: the same sampling times every run
        self._due = 0.0  # the next sampling time

    def start(self) -> None:
        import gevent

        if self._greenlet is not None:
            raise RuntimeError("LoadGuard already started")
        self._started = time.monotonic()
        self._greenlet = gevent.spawn(self._sample)

    def _sample(self) -> None:
        import gevent

        cpu_wall, cpu_used = time.monotonic(), time.process_time()
        self._due = cpu_wall + self.interval_s * self._gap(0.5, 1.5)
        while True:
            gevent.sleep(max(0.0, self._due - time.monotonic()))
            now = time.monotonic()
            self._take_due(now)
            if now - cpu_wall >= self.cpu_every_s:
                used = time.process_time()
                self._cpu.append((used - cpu_used) / (now - cpu_wall))
                cpu_wall, cpu_used = now, used

    def _take_due(self, now: float) -> None:
        """After a stall, every sampling time it covered waited until now."""
        while self._due <= now:
            self._lags.append(now - self._due)
            self._due += self.interval_s * self._gap(0.5, 1.5)

    def stop(self) -> GuardReport:
        """Stop sampling and summarise; a guard never started reports no samples."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            if self._due:  # a stall that ended just before stop, before the guard woke
                self._take_due(time.monotonic())
        lags = np.array(self._lags, dtype=np.float64) if self._lags else None
        cpu = np.array(self._cpu, dtype=np.float64) if self._cpu else None
        return GuardReport(
            interval_s=self.interval_s,
            duration_s=time.monotonic() - self._started if self._greenlet is not None else 0.0,
            samples=len(self._lags),
            lag_p50_s=_quantile(lags, 0.50),
            lag_p99_s=_quantile(lags, 0.99),
            lag_max_s=float(lags.max()) if lags is not None else None,
            cpu_samples=len(self._cpu),
            cpu_mean=float(cpu.mean()) if cpu is not None else None,
            cpu_p95=_quantile(cpu, 0.95),
        )


def _quantile(values: npt.NDArray[np.float64] | None, q: float) -> float | None:
    return None if values is None else float(np.quantile(values, q))


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"
