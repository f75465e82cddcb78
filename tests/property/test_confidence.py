"""The judge's intervals: ordered, holding their estimate, and covering the truth as often
as they claim (simulation over known distributions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from harness.judge.confidence import (
    mean_interval,
    order_ranks,
    percentile_with_interval,
    rate_interval,
    requests_for_share,
    samples_for_percentile,
    share_interval,
)

CONFIDENCES = st.sampled_from([0.8, 0.9, 0.95, 0.99])
values = st.lists(st.floats(0.0, 1e4, allow_nan=False), min_size=1, max_size=400)


@settings(max_examples=300, deadline=None)
@given(xs=values, q=st.floats(0.1, 99.9), c=CONFIDENCES)
def test_percentile_bounds_are_ordered_and_hold_the_estimate(
    xs: list[float], q: float, c: float
) -> None:
    samples = np.asarray(xs, dtype=np.float64)
    estimate, (lo, hi) = percentile_with_interval(samples, q, c)
    assert lo <= estimate <= hi
    assert estimate == pytest.approx(float(np.percentile(samples, q)), rel=1e-12, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 100_000), data=st.data(), c=CONFIDENCES)
def test_share_bounds_are_ordered_and_hold_the_estimate(
    n: int, data: st.DataObject, c: float
) -> None:
    k = data.draw(st.integers(0, n))
    lo, hi = share_interval(k, n, c)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 10**7), seconds=st.floats(0.1, 1e5), c=CONFIDENCES)
def test_rate_and_mean_bounds_are_ordered(count: int, seconds: float, c: float) -> None:
    lo, hi = rate_interval(count, seconds, c)
    assert 0.0 <= lo <= count / seconds <= hi


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=200), c=CONFIDENCES)
def test_mean_bounds_hold_the_mean(xs: list[float], c: float) -> None:
    samples = np.asarray(xs, dtype=np.float64)
    lo, hi = mean_interval(samples, c)
    assert lo <= float(np.mean(samples)) + 1e-9
    assert float(np.mean(samples)) - 1e-9 <= hi


DRAWS = 4000  # the coverage estimate's standard error is about 0.35 %


@pytest.mark.parametrize(("n", "q"), [(300, 0.5), (500, 0.9)])
def test_percentile_bounds_cover_the_true_quantile_at_the_nominal_level(n: int, q: float) -> None:
    rng = np.random.default_rng(20261127)
    lower, upper = order_ranks(n, q, 0.95)
    assert lower is not None
    assert upper is not None
    draws = np.sort(rng.lognormal(0.0, 1.0, (DRAWS, n)), axis=1)
    truth = math.exp(float(stats.norm.ppf(q)))
    assert 0.93 <= float(np.mean(draws[:, upper] >= truth)) <= 0.97
    assert 0.93 <= float(np.mean(draws[:, lower] <= truth)) <= 0.97


@pytest.mark.parametrize(("n", "p"), [(2000, 0.02), (1000, 0.05)])
def test_error_rate_bounds_cover_the_true_rate_at_the_nominal_level(n: int, p: float) -> None:
    rng = np.random.default_rng(7)
    failures = rng.binomial(n, p, DRAWS)
    bounds = np.array([share_interval(int(k), n, 0.95) for k in failures])
    assert 0.93 <= float(np.mean(bounds[:, 1] >= p)) <= 0.97
    assert 0.93 <= float(np.mean(bounds[:, 0] <= p)) <= 0.97


def test_a_p99_needs_299_samples_before_it_has_an_upper_bound() -> None:
    assert order_ranks(298, 0.99, 0.95)[1] is None
    assert order_ranks(299, 0.99, 0.95)[1] == 298


def test_zero_errors_below_a_tenth_of_a_percent_takes_about_3000_requests() -> None:
    needed = requests_for_share(0.0, 0.001, 0.95)
    assert needed == 2995
    assert share_interval(0, needed, 0.95)[1] < 0.001
    assert share_interval(0, needed - 1, 0.95)[1] >= 0.001
    # With errors, the answer is found by search and the bound then clears.
    n = requests_for_share(0.0005, 0.001, 0.95)
    assert n is not None
    assert share_interval(round(0.0005 * n), n, 0.95)[1] < 0.001


def test_zero_errors_against_a_vanishing_bound_needs_more_than_any_run() -> None:
    # 1 - 1e-296 rounds to 1: the count must come from log1p, not divide by log(1) = 0.
    assert requests_for_share(0.0, 2e-296, 0.95) is None
    assert requests_for_share(0.0, 1e-12, 0.95, limit=10**13) == 2_995_732_273_553  # ln 20 / 1e-12


def test_samples_for_a_percentile_shrink_as_the_estimate_leaves_the_bound() -> None:
    near = samples_for_percentile(0.995, 0.99, 0.95)
    far = samples_for_percentile(0.999, 0.99, 0.95)
    assert near is not None
    assert far is not None
    assert near > far
    assert samples_for_percentile(0.99, 0.99, 0.95) is None
