"""The Poisson schedule has the rate and dispersion of a Poisson process, and is reproducible."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.schedule import poisson_offsets


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
