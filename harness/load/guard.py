"""The load guard: each generator process samples its own event-loop wake-up lag and CPU use
while the load runs, and reports them (``records.generator.GuardReport``) for the judge's
saturation check (``judge.saturation``).
"""

from __future__ import annotations

import contextlib
import gc
import random
import time
from array import array
from collections.abc import Iterator
from typing import Any

import gevent
import numpy as np
import numpy.typing as npt

from harness.records.generator import LAG_LIMIT_S, GuardReport


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

    def __init__(
        self, interval_s: float = 0.05, cpu_every_s: float = 0.5, lag_limit_s: float = LAG_LIMIT_S
    ) -> None:
        if interval_s <= 0 or cpu_every_s <= 0:
            raise ValueError("interval_s and cpu_every_s must be > 0")
        self.interval_s = interval_s
        self.lag_limit_s = lag_limit_s
        self.cpu_every_s = cpu_every_s
        self._lags = array("d")
        self._cpu = array("d")
        self._greenlet: Any = None
        self._started = 0.0
        self._gap = random.Random(0).uniform  # fixed seed: the same sampling times every run
        self._due = 0.0  # the next sampling time

    def start(self) -> None:
        if self._greenlet is not None:
            raise RuntimeError("LoadGuard already started")
        self._started = time.monotonic()
        self._greenlet = gevent.spawn(self._sample)

    def _sample(self) -> None:
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
            lag_limit_s=self.lag_limit_s,
            lag_over=int(np.count_nonzero(lags > self.lag_limit_s)) if lags is not None else 0,
        )


def _quantile(values: npt.NDArray[np.float64] | None, q: float) -> float | None:
    return None if values is None else float(np.quantile(values, q))


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """While the load runs, the garbage collector skips everything made before it.

    A full collection walks every tracked object: after start-up (gevent, Locust, pydantic,
    numpy) about 150 000 of them, an 80 ms stall of the event loop on this project's CI
    machine, in which every chunk that arrives is stamped late. Frozen, a full collection walks
    only what the load made (records are written and dropped), well under a millisecond.
    Thawed afterwards, so the analysis collects as usual."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
