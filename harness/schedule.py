"""Arrival schedules: intended send offsets (seconds from the start), computed ahead, seeded."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def poisson_offsets(
    rate: float, horizon_s: float, seed: int, limit: int | None = None
) -> Iterator[float]:
    """Yield arrival offsets of a Poisson process of `rate` per second, up to horizon_s.

    Offsets are cumulative sums of exponential gaps, so the schedule is absolute: a late
    send never shifts the ones after it (no coordinated omission).
    """
    rng = np.random.default_rng(seed)
    t = 0.0
    sent = 0
    block = max(64, int(rate * 2))
    while True:
        gaps = rng.exponential(1.0 / rate, size=block)
        for offset in (t + np.cumsum(gaps)).tolist():
            if offset >= horizon_s or (limit is not None and sent >= limit):
                return
            sent += 1
            yield offset
        t = offset
