"""Confidence intervals the judge decides on, and how much more data would decide.

Every bound is one-sided at the policy's confidence ``c`` (0.95 by default): the upper bound
is above the true value with probability at least ``c``, and so is the lower bound below it,
so the interval [lower, upper] holds the true value with probability at least ``2c - 1``
(90 % at 0.95). One-sided bounds are what a gate needs: "p99 below 2 s at 95 %" is a
statement about the upper bound alone.

- Percentiles: distribution-free, from order statistics. The number of samples below the
  true q-quantile is Binomial(n, q), so the k-th smallest sample is an upper bound at ``c``
  when P(Binomial(n, q) <= k - 1) >= c. With too few samples no order statistic qualifies
  and the bound is infinite: a p99 needs 299 samples before it can pass at 95 %.
- Shares (error rate): Clopper-Pearson, exact and never below the nominal coverage: no pass
  on luck. With no errors, showing a rate below 0.1 % at 95 % takes 2 995 requests.
- Rates (requests or goodput per second): the count is Poisson, so the exact Poisson
  (gamma) bounds on the count, divided by the measured duration.
- Means: the normal approximation (the central limit theorem), the usual t-free form.

Each method assumes independent samples; the run's are not (chunks of one request, requests
close in time). Every function takes a design effect ``deff`` (harness.judge.dependence) and
works on n / deff effective samples, which is what makes the bounds hold on serving data.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats

from harness.judge.dependence import effective_ranks

FloatArray = npt.NDArray[np.float64]
Interval = tuple[float, float]


def z_of(confidence: float) -> float:
    """The one-sided normal quantile for a confidence (1.645 at 0.95)."""
    return float(stats.norm.ppf(confidence))


def order_ranks(
    n: int, q: float, confidence: float, deff: float = 1.0
) -> tuple[int | None, int | None]:
    """0-based ranks of the order statistics bounding the q-quantile of n samples.

    (lower, upper): None where no order statistic is a bound at this confidence (too few
    samples on that side). Exact binomial, as in Hahn & Meeker, "Statistical Intervals".
    With a design effect above 1 (harness.judge.dependence) the ranks are those of n / deff
    effective samples, mapped back onto the n at the same share.
    """
    if n <= 0:
        return None, None
    if deff > 1.0:
        n_eff = max(1, math.floor(n / deff))
        return effective_ranks(n, deff, order_ranks(n_eff, q, confidence), n_eff)
    # Upper: the k-th smallest (1-based) with P(X <= k-1) >= c, X ~ Binomial(n, q).
    k_minus_1 = int(stats.binom.ppf(confidence, n, q))
    upper = k_minus_1 if k_minus_1 < n else None
    # Lower: the j-th smallest with P(X >= j) >= c, i.e. P(X <= j-1) <= 1-c; the largest j.
    m = int(stats.binom.ppf(1.0 - confidence, n, q))  # smallest m with F(m) >= 1-c
    j_minus_1 = m if stats.binom.cdf(m, n, q) <= 1.0 - confidence else m - 1
    lower = j_minus_1 if j_minus_1 >= 0 else None
    return lower, upper


class OrderStatistics:
    """Sample arrays' order statistics, each array partitioned once for all the ranks the
    judge and the summary read (planned in advance): one O(n) pass per metric, not one per
    percentile, which is what keeps judging 10 million records within seconds. A rank found
    later (a bound widened by a design effect) partitions only the stretch between the two
    known ranks around it."""

    def __init__(self) -> None:
        self._planned: dict[int, set[int]] = {}
        self._done: dict[int, tuple[FloatArray, FloatArray, list[int]]] = {}

    def plan(self, samples: FloatArray, ranks: Iterable[int]) -> None:
        self._planned.setdefault(id(samples), set()).update(ranks)

    def take(self, samples: FloatArray, ranks: Sequence[int]) -> list[float]:
        """The values at these 0-based ranks of the sorted samples."""
        key = id(samples)
        done = self._done.get(key)
        if done is None or done[0] is not samples:
            wanted = sorted(set(ranks) | self._planned.get(key, set()))
            done = (samples, np.partition(samples, wanted), wanted)
            self._done[key] = done  # keeps samples alive, so its id stays its own
        _, part, known = done
        for rank in sorted(set(ranks) - set(known)):
            at = bisect.bisect_left(known, rank)
            start = known[at - 1] + 1 if at > 0 else 0
            stop = known[at] if at < len(known) else part.size
            part[start:stop] = np.partition(part[start:stop], rank - start)
            known.insert(at, rank)
        return [float(part[r]) for r in ranks]


def linear_ranks(n: int, q_percent: float) -> tuple[int, int, float]:
    """The two ranks numpy's linear percentile interpolates between, and the weight."""
    pos = q_percent / 100.0 * (n - 1)
    return math.floor(pos), math.ceil(pos), pos - math.floor(pos)


def percentile_ranks(n: int, q_percent: float, confidence: float, deff: float = 1.0) -> list[int]:
    """Every rank percentile_with_interval reads (for OrderStatistics.plan), and those it
    would read at design effects 2, 4, ... 1024: a bound widened by the run's dependence
    then lies in a short stretch between planned ranks, which is all a later read sorts."""
    lo_i, hi_i, _ = linear_ranks(n, q_percent)
    ranks = [lo_i, hi_i]
    for effect in (deff, *GUARD_EFFECTS):
        lower, upper = order_ranks(n, q_percent / 100.0, confidence, effect)
        ranks += [r for r in (lower, upper) if r is not None]
    return ranks


GUARD_EFFECTS = tuple(2.0**k for k in range(1, 11))


def percentile(
    samples: FloatArray, q_percent: float, order: OrderStatistics | None = None
) -> float:
    """numpy's linear percentile, read from shared order statistics when given."""
    lo_i, hi_i, w = linear_ranks(int(samples.size), q_percent)
    order = order or OrderStatistics()
    low, high = order.take(samples, [lo_i, hi_i])
    return low + (high - low) * w


def percentile_with_interval(
    samples: FloatArray,
    q_percent: float,
    confidence: float,
    order: OrderStatistics | None = None,
    deff: float = 1.0,
) -> tuple[float, Interval]:
    """The q-th percentile (linear interpolation, as everywhere in the harness) and its
    order-statistic interval on n / deff effective samples, from one O(n) partition."""
    n = int(samples.size)
    lo_i, hi_i, w = linear_ranks(n, q_percent)
    lower, upper = order_ranks(n, q_percent / 100.0, confidence, deff)
    order = order or OrderStatistics()
    order.plan(samples, percentile_ranks(n, q_percent, confidence, deff))
    a, b = order.take(samples, [lo_i, hi_i])
    estimate = a + (b - a) * w
    low = order.take(samples, [lower])[0] if lower is not None else -math.inf
    high = order.take(samples, [upper])[0] if upper is not None else math.inf
    return estimate, (min(low, estimate), max(high, estimate))


def mean_interval(samples: FloatArray, confidence: float, deff: float = 1.0) -> Interval:
    """Bounds on the mean of n / deff effective samples, corrected for skewness."""
    n = int(samples.size)
    if n < 3:
        return mean_interval_from(
            float(np.mean(samples)) if n else math.nan, math.nan, n, confidence
        )
    mean = float(np.mean(samples))
    centred = samples - mean
    squares = centred * centred
    variance = float(np.sum(squares)) / (n - 1)
    third = float(np.dot(squares, centred)) / n
    return mean_interval_from(mean, variance, n, confidence, deff, third)


def mean_interval_from(
    mean: float,
    variance: float,
    n: int,
    confidence: float,
    deff: float = 1.0,
    third: float = 0.0,
) -> Interval:
    """mean_interval from the mean, the sample variance, the third central moment and n.

    A mean of skewed samples (latencies: a long right tail) is skewed too, and the plain
    normal bounds then miss on the tail's side. The studentized mean's Edgeworth expansion
    (Hall 1992) moves both bounds by se * g * (2 z^2 + 1) / 6, where g = skewness / sqrt(n_eff)
    is the mean's own skewness.
    """
    if n < 2 or not math.isfinite(variance):
        return -math.inf, math.inf
    scale = max(deff, 1.0)
    se = math.sqrt(max(variance, 0.0) * scale / n)
    z = z_of(confidence)
    spread = max(variance, 0.0) ** 1.5
    skew = third / spread if spread > 0 and math.isfinite(third / spread) else 0.0
    g = max(-1.0, min(1.0, skew * math.sqrt(scale / n)))  # the mean's skewness, bounded
    shift = se * g * (2.0 * z * z + 1.0) / 6.0
    return mean - z * se + shift, mean + z * se + shift


def share_interval(k: int, n: int, confidence: float, deff: float = 1.0) -> Interval:
    """Clopper-Pearson one-sided bounds on a proportion of k in n, taken on n / deff
    effective trials at the same share (the beta form accepts fractional counts)."""
    if n <= 0:
        return 0.0, 1.0
    scale = max(deff, 1.0)
    k_eff, n_eff = k / scale, n / scale
    lower = 0.0 if k <= 0 else float(stats.beta.ppf(1.0 - confidence, k_eff, n_eff - k_eff + 1))
    upper = 1.0 if k >= n else float(stats.beta.ppf(confidence, k_eff + 1, n_eff - k_eff))
    return min(lower, k / n), max(upper, k / n)


def rate_interval(count: int, duration_s: float, confidence: float, deff: float = 1.0) -> Interval:
    """Exact Poisson bounds on events per second; with a design effect (bursts), the gamma
    bounds of count / deff events scaled back by deff."""
    if duration_s <= 0:
        return 0.0, math.inf
    scale = max(deff, 1.0)
    c = count / scale
    lower = 0.0 if count <= 0 else float(stats.gamma.ppf(1.0 - confidence, c)) * scale
    upper = float(stats.gamma.ppf(confidence, c + 1)) * scale
    return min(lower, count) / duration_s, max(upper, count) / duration_s


# --- how much more data would decide ------------------------------------------------------


def samples_for_percentile(
    share_at_bound: float, q: float, confidence: float, limit: int = 10**9
) -> int | None:
    """Samples for the q-quantile's order-statistic bound to clear a bound, if the share of
    samples at or below it stays ``share_at_bound`` (exact binomial ranks, by search)."""
    if share_at_bound == q:
        return None  # the estimate sits on the bound: no amount of data separates them

    def clears(n: int) -> bool:
        lower, upper = order_ranks(n, q, confidence)
        below = share_at_bound * n  # samples at or below the bound
        if share_at_bound > q:  # the upper bound must fall at or below the bound
            return upper is not None and upper + 1 <= math.floor(below)
        return lower is not None and lower + 1 > math.ceil(below)  # the lower bound above it

    return _smallest(clears, limit)


def requests_for_share(p: float, bound: float, confidence: float, limit: int = 10**9) -> int | None:
    """Requests for the Clopper-Pearson interval to clear ``bound`` if the share stays p.

    With p = 0 this is the exact "zero failures in n" count, ln(1-c) / ln(1-bound).
    """
    if p == bound:
        return None
    if p == 0.0:
        # log1p: a bound under 1e-16 would make 1 - bound round to 1 and the log zero.
        n = math.log(1.0 - confidence) / math.log1p(-bound) if bound < 1.0 else 1.0
        return max(1, math.ceil(n)) if n <= limit else None

    def clears(n: int) -> bool:
        k = round(p * n)
        lo, hi = share_interval(k, n, confidence)
        return hi < bound if p < bound else lo > bound

    return _smallest(clears, limit)


def samples_for_mean(mean: float, sd: float, bound: float, confidence: float) -> int | None:
    """Samples for the mean's interval to clear a bound, if mean and sd stay."""
    gap = abs(mean - bound)
    if gap == 0.0:
        return None
    return max(2, math.ceil((z_of(confidence) * sd / gap) ** 2))


def duration_for_rate(
    rate: float, bound: float, confidence: float, limit_s: float = 1e7
) -> float | None:
    """Seconds of measurement for the Poisson interval on a rate to clear ``bound``."""
    if rate == bound or rate <= 0.0:
        return None

    def clears(seconds: int) -> bool:
        lo, hi = rate_interval(round(rate * seconds), float(seconds), confidence)
        return hi < bound if rate < bound else lo > bound

    found = _smallest(clears, int(limit_s))
    return float(found) if found is not None else None


def _smallest(ok: Callable[[int], bool], limit: int) -> int | None:
    """The smallest n in [1, limit] with ok(n), by doubling then bisection (ok monotone)."""
    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = hi // 2 + 1 if hi > 1 else 1
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return hi
