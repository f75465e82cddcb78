"""Arrival schedules: intended send offsets (seconds from the run's start), seeded.

A unit-rate renewal process (exponential gaps: Poisson; gamma gaps: bursty) is mapped
through the inverse of the cumulative rate Λ(t) of the scenario's piecewise-linear load
profile (time rescaling), so steps and ramps keep the process's shape. Offsets are
absolute: a late send never shifts the ones after it (no coordinated omission).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from harness.spec.load import Segment


def renewal_gaps(seed: int, burstiness: float = 1.0, block: int = 1024) -> Iterator[float]:
    """Unit-mean gaps: exponential (burstiness 1) or gamma with shape = burstiness."""
    rng = np.random.default_rng(seed)
    while True:
        if burstiness == 1.0:
            gaps = rng.exponential(1.0, size=block)
        else:
            gaps = rng.gamma(shape=burstiness, scale=1.0 / burstiness, size=block)
        yield from gaps.tolist()


def _inverse_in_segment(seg: Segment, share: float, need: float) -> float | None:
    """Time offset into seg at which the cumulative rate reaches `need`, or None if it doesn't."""
    r0 = seg.level0 * share
    r1 = seg.level1 * share
    length = seg.end - seg.start
    total = 0.5 * (r0 + r1) * length
    if need > total or total <= 0:
        return None
    slope = (r1 - r0) / length
    if abs(slope) < 1e-12:
        return need / r0
    # r0*x + slope/2*x^2 = need; the form below avoids cancellation when slope is small.
    return 2.0 * need / (r0 + math.sqrt(max(r0 * r0 + 2.0 * slope * need, 0.0)))


def arrival_offsets(
    segments: Sequence[Segment],
    seed: int,
    burstiness: float = 1.0,
    share: float = 1.0,
    limit: int | None = None,
) -> Iterator[float]:
    """Arrival offsets for a load profile; `share` scales the rate (a worker's part)."""
    gaps = renewal_gaps(seed, burstiness)
    sent = 0
    need = next(gaps)  # cumulative rate still to cover before the next arrival
    for seg in segments:
        seg_total = 0.5 * (seg.level0 + seg.level1) * share * (seg.end - seg.start)
        covered = 0.0  # cumulative rate of this segment already used by arrivals
        while limit is None or sent < limit:
            x = _inverse_in_segment(seg, share, covered + need)
            if x is None:
                need -= seg_total - covered
                break
            covered += need
            sent += 1
            yield seg.start + x
            need = next(gaps)
        else:
            return


def users_at(segments: Sequence[Segment], t: float, share: float = 1.0) -> int:
    """Closed-loop users wanted at offset t (rounded to whole users)."""
    for seg in segments:
        if seg.start <= t < seg.end:
            return round(seg.at(t) * share)
    return 0
