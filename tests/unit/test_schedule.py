"""The Poisson schedule has the rate and dispersion of a Poisson process, and is reproducible."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from harness.load.schedule import arrival_offsets, users_at
from harness.spec.load import Segment


def poisson_offsets(
    rate: float, horizon_s: float, seed: int, limit: int | None = None
) -> Iterator[float]:
    """A constant-rate Poisson process: one segment of the schedule."""
    yield from arrival_offsets([Segment(0.0, horizon_s, rate, rate)], seed, limit=limit)


def _gaps(rate: float, n: int, seed: int) -> np.ndarray:
    offsets = np.fromiter(poisson_offsets(rate, horizon_s=1e9, seed=seed, limit=n), float)
    assert len(offsets) == n
    return np.diff(np.concatenate([[0.0], offsets]))


@pytest.mark.parametrize(("rate", "seed"), [(0.5, 1), (8.0, 2), (200.0, 3), (5000.0, 4)])
def test_mean_gap_and_dispersion(rate: float, seed: int) -> None:
    n = 20_000
    gaps = _gaps(rate, n, seed)
    assert (gaps > 0).all()
    # Mean gap 1/rate: its standard error is (1/rate)/sqrt(n); allow 4.5 standard errors.
    assert abs(gaps.mean() * rate - 1.0) < 4.5 / math.sqrt(n)
    # Exponential gaps have a coefficient of variation of 1 (std error ~ 1/sqrt(n)).
    cv = gaps.std(ddof=1) / gaps.mean()
    assert abs(cv - 1.0) < 4.5 / math.sqrt(n)


def test_gaps_are_exponential_by_kolmogorov_smirnov() -> None:
    rate, n = 20.0, 5000
    gaps = np.sort(_gaps(rate, n, seed=11))
    cdf = 1.0 - np.exp(-rate * gaps)
    ecdf_hi = np.arange(1, n + 1) / n
    ecdf_lo = np.arange(0, n) / n
    d = max(float(np.max(ecdf_hi - cdf)), float(np.max(cdf - ecdf_lo)))
    assert d < 1.63 / math.sqrt(n)  # KS critical value at alpha = 0.01


def test_counts_in_windows_have_poisson_dispersion() -> None:
    # Counts per 1 s window of a Poisson process have variance equal to their mean.
    rate = 50.0
    offsets = np.fromiter(poisson_offsets(rate, horizon_s=400.0, seed=5), float)
    counts = np.bincount(offsets.astype(int), minlength=400)[:400]
    dispersion = counts.var(ddof=1) / counts.mean()
    assert 0.8 < dispersion < 1.2  # ~4 standard errors of the index of dispersion at 400 windows


def test_same_seed_same_schedule_and_limits() -> None:
    a = list(poisson_offsets(10.0, horizon_s=5.0, seed=3))
    b = list(poisson_offsets(10.0, horizon_s=5.0, seed=3))
    c = list(poisson_offsets(10.0, horizon_s=5.0, seed=4))
    assert a == b
    assert a != c
    assert all(x < 5.0 for x in a)
    assert a == sorted(a)
    assert len(list(poisson_offsets(10.0, horizon_s=5.0, seed=3, limit=7))) == 7


def _counts(offsets: list[float], edges: list[float]) -> np.ndarray:
    return np.histogram(offsets, bins=edges)[0]


def test_steps_hold_each_stage_rate() -> None:
    segs = [Segment(0, 100, 20, 20), Segment(100, 200, 80, 80), Segment(200, 300, 5, 5)]
    offsets = list(arrival_offsets(segs, seed=1))
    for got, want in zip(_counts(offsets, [0, 100, 200, 300]), [2000, 8000, 500], strict=True):
        assert abs(got - want) < 4.5 * math.sqrt(want)


def test_linear_ramp_follows_the_cumulative_rate() -> None:
    # Rate rising 0 -> 100/s over 200 s: the first half holds 1/4 of the arrivals.
    offsets = list(arrival_offsets([Segment(0, 200, 0, 100)], seed=2))
    first, second = _counts(offsets, [0, 100, 200])
    assert abs(first - 2500) < 4.5 * math.sqrt(2500)
    assert abs(second - 7500) < 4.5 * math.sqrt(7500)
    down = list(arrival_offsets([Segment(0, 200, 100, 0)], seed=3))
    first, second = _counts(down, [0, 100, 200])
    assert abs(first - 7500) < 4.5 * math.sqrt(7500)
    assert abs(second - 2500) < 4.5 * math.sqrt(2500)


@pytest.mark.parametrize("burstiness", [0.25, 1.0, 4.0])
def test_gamma_gaps_have_the_burstiness_cv(burstiness: float) -> None:
    n, rate = 20_000, 50.0
    offsets = np.fromiter(
        arrival_offsets([Segment(0, 1e9, rate, rate)], seed=4, burstiness=burstiness, limit=n),
        float,
    )
    gaps = np.diff(np.concatenate([[0.0], offsets]))
    assert abs(gaps.mean() * rate - 1.0) < 5 / math.sqrt(burstiness * n)
    cv = gaps.std(ddof=1) / gaps.mean()
    assert abs(cv - 1 / math.sqrt(burstiness)) < 0.05 / math.sqrt(burstiness)


def test_worker_shares_add_up_to_the_rate() -> None:
    seg = [Segment(0, 200, 40, 40)]
    halves = [len(list(arrival_offsets(seg, seed=s, share=0.5))) for s in (10, 11)]
    assert abs(sum(halves) - 8000) < 4.5 * math.sqrt(8000)
    assert all(abs(h - 4000) < 4.5 * math.sqrt(4000) for h in halves)


def test_zero_rate_stage_sends_nothing_and_carries_on() -> None:
    segs = [Segment(0, 10, 50, 50), Segment(10, 20, 0, 0), Segment(20, 30, 50, 50)]
    offsets = list(arrival_offsets(segs, seed=5))
    assert not [t for t in offsets if 10 <= t < 20]
    assert len([t for t in offsets if t >= 20]) > 300


def test_users_follow_the_profile() -> None:
    segs = [Segment(0, 10, 0, 10), Segment(10, 20, 10, 10)]
    assert [users_at(segs, t) for t in (0, 2.5, 5, 9.99, 15)] == [0, 2, 5, 10, 10]
    assert users_at(segs, 25) == 0
    assert users_at(segs, 15, share=0.5) == 5
