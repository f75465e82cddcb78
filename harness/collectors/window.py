"""Deltas over a window from snapshots: histogram buckets, counter increases, gauge series.

"The value as of T" is the last snapshot at or before T, which is what a Prometheus instant
query returns; the window's delta is as-of(end) minus as-of(start). Both modes read the same
rule, so they agree to within one scrape interval. A counter that went down (a server
restart) has no delta: it is reported, never turned into a negative rate.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.collectors.families import Family
from harness.collectors.series import Point
from harness.collectors.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class HistogramWindow:
    """A histogram's observations inside a window: cumulative counts at each finite bound."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]  # observations <= bound, same length as bounds
    count: float  # all observations (the +Inf bucket)
    total: float  # sum of observed values

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count > 0 else None

    def quantile(self, q: float) -> tuple[float, float, float] | None:
        """(estimate, lower, upper) for quantile q in (0, 1): the bucket holding it and
        Prometheus' linear interpolation inside it. None without observations.

        The bucket is certain; the estimate is not (a true p95 of 220 ms can read 295 ms).
        Past the last finite bound the upper side is +inf and the estimate that bound.
        """
        if self.count <= 0:
            return None
        rank = q * self.count
        lower_bound, lower_count = 0.0, 0.0
        for bound, cum in zip(self.bounds, self.cumulative, strict=True):
            if cum >= rank and cum > lower_count:
                est = lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                    cum - lower_count
                )
                return est, lower_bound, bound
            if cum > lower_count:
                lower_count = cum
            lower_bound = bound
        last = self.bounds[-1] if self.bounds else 0.0
        return last, last, math.inf

    def share_under(self, x: float) -> tuple[float, float, float] | None:
        """(estimate, lower, upper) share of observations <= x; exact when x is a bound."""
        if self.count <= 0:
            return None
        idx = bisect.bisect_left(self.bounds, x)
        if idx < len(self.bounds) and self.bounds[idx] == x:
            share = self.cumulative[idx] / self.count
            return share, share, share
        lo_bound = self.bounds[idx - 1] if idx > 0 else 0.0
        lo = self.cumulative[idx - 1] / self.count if idx > 0 else 0.0
        if idx >= len(self.bounds):
            return lo, lo, 1.0
        hi_bound = self.bounds[idx]
        hi = self.cumulative[idx] / self.count
        est = lo + (hi - lo) * (x - lo_bound) / (hi_bound - lo_bound)
        return est, lo, hi

    def to_json(self) -> dict[str, Any]:
        return {
            "bounds": list(self.bounds),
            "cumulative": list(self.cumulative),
            "count": self.count,
            "sum": self.total,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistogramWindow:
        return cls(
            tuple(float(x) for x in data["bounds"]),
            tuple(float(x) for x in data["cumulative"]),
            float(data["count"]),
            float(data["sum"]),
        )


@dataclass(frozen=True, slots=True)
class Window:
    """What the server counted between two instants (wall-clock seconds)."""

    start: float
    end: float
    start_at: float | None  # the snapshot times actually used
    end_at: float | None
    histograms: dict[str, HistogramWindow] = field(default_factory=dict)
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # metric -> why it has no delta

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def counter_total(self, metric: str) -> float | None:
        by = self.counters.get(metric)
        return None if by is None else sum(by.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "start_at": self.start_at,
            "end_at": self.end_at,
            "histograms": {k: v.to_json() for k, v in self.histograms.items()},
            "counters": self.counters,
            "missing": self.missing,
        }


def as_of(snapshots: Sequence[Snapshot], t: float) -> Snapshot | None:
    """The last snapshot at or before t (snapshots sorted by wall), else None."""
    idx = bisect.bisect_right([s.wall for s in snapshots], t)
    return snapshots[idx - 1] if idx > 0 else None


def window(
    snapshots: Sequence[Snapshot],
    families: Sequence[Family],
    start: float,
    end: float,
    stale_s: float,
) -> Window:
    """Deltas of every histogram and counter family between ``start`` and ``end``.

    ``stale_s``: how far before ``end`` the last snapshot may be (about two scrape
    intervals); older, and the window is incomplete: every family is missing, with why.
    A start before the first snapshot uses the first (the server was idle before load).
    """
    ordered = sorted(snapshots, key=lambda s: s.wall)
    first = ordered[0] if ordered else None
    begin = as_of(ordered, start) or first
    finish = as_of(ordered, end)
    out = Window(start, end, begin.wall if begin else None, finish.wall if finish else None)
    wanted = [f for f in families if f.type in ("histogram", "counter")]
    if begin is None or finish is None or finish.wall < end - stale_s or finish is begin:
        why = _why_no_window(ordered, end, stale_s)
        for fam in wanted:
            out.missing[fam.metric] = why
        return out
    for fam in wanted:
        a = begin.values.get(fam.metric)
        b = finish.values.get(fam.metric)
        if b is None:
            out.missing[fam.metric] = f"the server exposes no {' or '.join(fam.names)}"
            continue
        a = a or {}
        if any(b.get(k, 0.0) < v - 1e-9 for k, v in a.items()):
            out.missing[fam.metric] = (
                f"{fam.names[0]} went down during the window: the server restarted"
            )
            continue
        delta = {k: v - a.get(k, 0.0) for k, v in b.items()}
        if fam.type == "counter":
            out.counters[fam.metric] = delta
        else:
            hist = _histogram(delta)
            if hist is None:
                out.missing[fam.metric] = f"{fam.names[0]} has no buckets"
            else:
                out.histograms[fam.metric] = hist
    return out


def _why_no_window(ordered: Sequence[Snapshot], end: float, stale_s: float) -> str:
    if not ordered:
        return "no server metrics were collected"
    last = ordered[-1].wall
    if last < end - stale_s:
        return f"server metrics stop {end - last:.1f} s before the window ends"
    return "only one server snapshot covers the window"


def _histogram(delta: dict[str, float]) -> HistogramWindow | None:
    buckets = sorted(
        (float(k[3:]), v) for k, v in delta.items() if k.startswith("le=") and k != "le=+Inf"
    )
    count = delta.get("count", delta.get("le=+Inf"))
    if count is None:
        return None
    return HistogramWindow(
        bounds=tuple(b for b, _ in buckets),
        cumulative=tuple(c for _, c in buckets),
        count=count,
        total=delta.get("sum", math.nan),
    )


def series_points(
    source: str, snapshots: Sequence[Snapshot], families: Sequence[Family]
) -> list[Point]:
    """Gauge values at every snapshot, and counter rates between consecutive snapshots."""
    points: list[Point] = []
    ordered = sorted(snapshots, key=lambda s: s.wall)
    gauges = [f for f in families if f.type == "gauge"]
    counters = [f for f in families if f.type == "counter"]
    prev: Snapshot | None = None
    for snap in ordered:
        for fam in gauges:
            for key, value in snap.values.get(fam.metric, {}).items():
                points.append(Point(source, fam.metric, key, snap.wall, value))
        if prev is not None and snap.wall > prev.wall:
            dt = snap.wall - prev.wall
            for fam in counters:
                now, before = snap.values.get(fam.metric), prev.values.get(fam.metric)
                if now is None or before is None:
                    continue
                total = sum(now.values()) - sum(before.values())
                if total >= 0:
                    points.append(Point(source, f"{fam.metric}.rate", "", snap.wall, total / dt))
        prev = snap
    return points
