"""The saturation check's lag rule holds its error rate on stalls shaped like a shared machine's.

The claim (harness.judge.saturation): a run is INVALID for loop lag only when more of the
guard's wake-up samples were over 10 ms than a run whose time is at most 1 % stalled that
long would give at 95 % confidence. Here a run's stalls are drawn (short ones scattered,
long ones alone, bursts of them close together), scaled so that exactly 1 % of the run's
time has an event waiting more than 10 ms (the hardest case the claim covers), and sampled
as the guard samples: jittered gaps of 25-75 ms, each due time waiting for the stall it
falls in to end. The false-INVALID rate must stay under 5 % (plus Monte Carlo error); the
point p99 the check used before threw out runs stalled half as much. And a run 4 % stalled
is caught.
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.judge.saturation import assess
from harness.records.generator import LAG_LIMIT_S, GuardReport

DRAWS = 1000
INTERVAL_S = 0.05
BASE_LAG_S = 0.0005  # an idle loop's wake-up lag


def stalls(rng: np.random.Generator, shape: str, duration_s: float, share: float) -> np.ndarray:
    """(start, end) of non-overlapping stalls whose time over the limit is ``share`` of the
    run: a stall of length d keeps an event waiting longer than the limit for d - limit."""
    if shape == "scattered":  # a neighbour's GC passes, page faults: many short stalls
        excess = rng.exponential(0.005, size=max(1, int(duration_s * 4)))
        gaps = rng.exponential(1.0, size=excess.size)
    elif shape == "alone":  # one long stall (a swap-in, a CPU-bound neighbour's burst)
        excess = np.array([1.0])
        gaps = np.array([1.0])
    else:  # "bursts": episodes of contention, stalls close together inside each
        episodes = max(1, int(duration_s / 10))
        per = rng.integers(3, 12, size=episodes)
        excess = rng.exponential(0.01, size=int(per.sum()))
        gaps = np.concatenate([np.r_[rng.exponential(5.0), rng.exponential(0.08, p - 1)]
                               for p in per])  # fmt: skip
    excess *= share * duration_s / excess.sum()
    lengths = excess + LAG_LIMIT_S
    room = duration_s - lengths.sum()
    gaps *= room * rng.uniform(0.2, 1.0) / gaps.sum()
    starts = rng.uniform(0, room - gaps.sum()) + np.cumsum(gaps) + np.r_[0, np.cumsum(lengths)[:-1]]
    return np.column_stack([starts, starts + lengths])


def guard_lags(rng: np.random.Generator, spans: np.ndarray, duration_s: float) -> np.ndarray:
    """What LoadGuard records: due times at jittered gaps; a due time inside a stall waits
    until the stall ends, any other waits about an idle loop's lag."""
    due = np.cumsum(INTERVAL_S * rng.uniform(0.5, 1.5, size=int(duration_s / INTERVAL_S) + 10))
    due = due[due < duration_s]
    at = np.searchsorted(spans[:, 0], due, side="right") - 1
    inside = (at >= 0) & (due < spans[np.maximum(at, 0), 1])
    return np.where(inside, spans[np.maximum(at, 0), 1] - due, BASE_LAG_S)


def report(lags: np.ndarray, counted: bool = True) -> GuardReport:
    return GuardReport(
        interval_s=INTERVAL_S,
        duration_s=lags.size * INTERVAL_S,
        samples=int(lags.size),
        lag_p50_s=float(np.quantile(lags, 0.5)),
        lag_p99_s=float(np.quantile(lags, 0.99)),
        lag_max_s=float(lags.max()),
        cpu_samples=10,
        cpu_mean=0.1,
        cpu_p95=0.2,
        lag_limit_s=LAG_LIMIT_S if counted else None,
        lag_over=int(np.count_nonzero(lags > LAG_LIMIT_S)) if counted else None,
    )


def invalid_rate(shape: str, duration_s: float, share: float, seed: int, counted: bool = True
                 ) -> float:  # fmt: skip
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(DRAWS):
        spans = stalls(rng, shape, duration_s, share)
        hits += bool(assess(report(guard_lags(rng, spans, duration_s), counted)))
    return hits / DRAWS


@pytest.mark.parametrize("shape", ["scattered", "alone", "bursts"])
@pytest.mark.parametrize("duration_s", [5.0, 60.0])
def test_a_run_stalled_1_percent_of_its_time_is_rarely_invalid(
    shape: str, duration_s: float
) -> None:
    rate = invalid_rate(shape, duration_s, 0.01, seed=int(duration_s) * 7 + len(shape))
    assert rate <= 0.05 + 2 * (0.05 * 0.95 / DRAWS) ** 0.5, rate


def test_the_point_p99_threw_out_sound_runs() -> None:
    """Why the rule changed: with 0.5 % of its time stalled (half the limit), a 5 s run's
    point p99 (the rule before) was over 10 ms in 7.6 % of the runs (0.3 % stalled: 3.1 %);
    the bound, in 0.2 % (0.3 % stalled: none)."""
    before = invalid_rate("scattered", 5.0, 0.005, seed=3, counted=False)
    now = invalid_rate("scattered", 5.0, 0.005, seed=3)
    assert before > 0.05 > 0.01 > now, (before, now)


@pytest.mark.parametrize("shape", ["scattered", "bursts"])
def test_a_run_stalled_4_percent_of_its_time_is_caught(shape: str) -> None:
    assert invalid_rate(shape, 60.0, 0.04, seed=11) >= 0.95
