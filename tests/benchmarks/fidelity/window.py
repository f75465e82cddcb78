"""What both benchmark clients share: request bodies, the measuring window, the result file."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# What both clients send: the same path and headers, so they do the same work.
PATH = "/v1/chat/completions"
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "text/event-stream",
    "Accept-Encoding": "identity",
}


def body_for(rid: int) -> bytes:
    """A streaming chat request whose `user` field lets the server log chunks by request."""
    return (
        b'{"model":"bench","messages":[{"role":"user","content":"Say twenty words."}],'
        b'"max_tokens":20,"temperature":0.0,"stream":true,'
        b'"stream_options":{"include_usage":true},"user":"%d"}' % rid
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Window:
    """The measuring window: planned bounds, then the actual ones with the CPU spent inside."""

    def __init__(self, warmup_s: float, duration_s: float) -> None:
        self.start = time.monotonic() + warmup_s
        self.end = self.start + duration_s
        self.t_open = self.t_close = 0.0
        self.cpu_open = self.cpu_close = 0.0

    def open(self) -> None:
        self.t_open, self.cpu_open = time.monotonic(), _cpu_s()

    def close(self) -> None:
        self.t_close, self.cpu_close = time.monotonic(), _cpu_s()

    async def measure_async(self, users: Sequence[asyncio.Task[None]]) -> None:
        """Open the window at its start, close it at its end, then let the users finish."""
        await asyncio.sleep(max(0.0, self.start - time.monotonic()))
        self.open()
        await asyncio.sleep(max(0.0, self.end - time.monotonic()))
        self.close()
        await asyncio.wait(users, timeout=30)


def poisson_schedule(rate: float, t0: float, end: float) -> list[float]:
    """Intended send times before `end`: t0 + running sum of exponential gaps of mean 1/rate."""
    rng = np.random.default_rng(1)
    batch = max(64, int(rate * (end - t0)))
    gaps = rng.exponential(1.0 / rate, size=batch)
    while t0 + gaps.sum() < end:
        gaps = np.concatenate([gaps, rng.exponential(1.0 / rate, size=batch)])
    return [float(t) for t in t0 + np.cumsum(gaps) if t < end]


def save(path: Path, window: Window, requests: Sequence[tuple[int, Sequence[float], bool]]) -> None:
    """Arrival of every content chunk inside the window, keyed by (request id, chunk index)."""
    rid: list[int] = []
    idx: list[int] = []
    t_arrival: list[float] = []
    for request_id, times, _failed in requests:
        for k, t in enumerate(times):
            if window.t_open <= t < window.t_close:
                rid.append(request_id)
                idx.append(k)
                t_arrival.append(t)
    np.savez(
        path,
        rid=np.array(rid, dtype=np.int64),
        idx=np.array(idx, dtype=np.int64),
        t_arrival=np.array(t_arrival, dtype=np.float64),
        wall_s=np.float64(window.t_close - window.t_open),
        cpu_s=np.float64(window.cpu_close - window.cpu_open),
        requests=np.int64(len(requests)),
        failed=np.int64(sum(failed for _, _, failed in requests)),
    )
