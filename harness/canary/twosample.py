"""Two-sample statistics for canary against baseline: Mann-Whitney U, the Hodges-Lehmann
shift with its distribution-free interval, Newcombe's interval on a difference of two
proportions, and a bootstrap interval on a quantile difference (see harness.canary.compare).

Each side's samples are dependent (chunks of one request, requests close in time), so every
variance takes each side's design effect (harness.judge.dependence). For U it is the design
effect of the side's mean pooled rank, the term U's variance is made of (its Hajek
projection): Var(U) = nm (m d_c + n d_b + 1) / 12, which is the textbook nm (n + m + 1) / 12
when both are 1."""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np
from scipy import stats

from harness.judge.confidence import FloatArray, Interval
from harness.judge.dependence import Starts, mean_effect, subsample_starts

#: Below this many values a side, the U test's p-value is exact rather than asymptotic.
EXACT_MAX: Final = 8


def rank_effects(
    canary: FloatArray,
    baseline: FloatArray,
    canary_batches: Starts | None,
    baseline_batches: Starts | None,
    confidence: float,
) -> tuple[float, float]:
    """Each side's design effect on its mean pooled rank, at the one-sided (1 + c) / 2."""
    if canary_batches is None and baseline_batches is None:
        return 1.0, 1.0
    ranks = stats.rankdata(np.concatenate([canary, baseline]))
    one_sided = 0.5 + confidence / 2.0
    d_c = mean_effect(canary_batches, ranks[: canary.size]).inflation(one_sided)
    d_b = mean_effect(baseline_batches, ranks[canary.size :]).inflation(one_sided)
    return d_c, d_b


def u_variance_ratio(n: int, m: int, d_c: float, d_b: float) -> float:
    """Var(U) with these design effects over Var(U) for independent samples."""
    return (m * d_c + n * d_b + 1.0) / (n + m + 1.0)


def mann_whitney_p(
    canary: FloatArray, baseline: FloatArray, variance_ratio: float = 1.0
) -> float | None:
    """Two-sided Mann-Whitney U p-value; exact for tiny tie-free samples, else asymptotic,
    with U's variance scaled by ``variance_ratio`` (dependence) when above 1."""
    small = min(canary.size, baseline.size) <= EXACT_MAX
    method: Literal["asymptotic", "auto"] = "auto" if small else "asymptotic"
    p = float(stats.mannwhitneyu(canary, baseline, alternative="two-sided", method=method).pvalue)
    if not math.isfinite(p):
        return None  # every value tied: no test
    if variance_ratio > 1.0 and 0.0 < p < 1.0:
        z = float(stats.norm.isf(p / 2.0)) / math.sqrt(variance_ratio)
        p = float(2.0 * stats.norm.sf(z))
    return p


def hodges_lehmann(
    canary: FloatArray,
    baseline: FloatArray,
    confidence: float,
    variance_ratio: float = 1.0,
) -> tuple[float, Interval | None]:
    """Median of the canary - baseline pairwise differences and its distribution-free interval.

    The interval is [D(k), D(nm+1-k)] of the sorted differences D, with k from the normal
    approximation of U's null distribution, its variance scaled by ``variance_ratio`` for
    dependent samples (rounded down: coverage at least ``confidence`` when there are no
    ties). None when the samples are too small for any k.
    """
    n, m = canary.size, baseline.size
    diffs = np.subtract.outer(canary, baseline).ravel()
    total = diffs.size
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    spread = math.sqrt(n * m * (n + m + 1) / 12.0 * max(variance_ratio, 1.0))
    k = math.floor(n * m / 2.0 - z * spread)
    mid = sorted({(total - 1) // 2, total // 2})
    ranks = sorted({*mid, *((k - 1, total - k) if k >= 1 else ())})
    part = np.partition(diffs, ranks)
    shift = float(np.mean(part[mid]))
    if k < 1:
        return shift, None
    return shift, (float(part[k - 1]), float(part[total - k]))


def newcombe_interval(x: float, n: float, y: float, m: float, confidence: float) -> Interval:
    """Newcombe's hybrid score interval for x/n - y/m (two Wilson intervals combined); the
    counts may be fractional (effective counts: x / deff of n / deff)."""
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p1, p2 = x / n, y / m
    l1, u1 = _wilson(x, n, z)
    l2, u2 = _wilson(y, m, z)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def bootstrap_quantile_diff(
    canary: FloatArray,
    baseline: FloatArray,
    q: float,
    confidence: float,
    resamples: int,
    rng: np.random.Generator,
) -> Interval:
    """Percentile-bootstrap interval of q-quantile(canary) - q-quantile(baseline).

    Each side is resampled on its own; the quantile is numpy's "linear" one, as the judge's.
    """
    c = _bootstrap_quantile(canary, q, resamples, rng)
    b = _bootstrap_quantile(baseline, q, resamples, rng)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(c - b, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _bootstrap_quantile(
    values: FloatArray, q: float, resamples: int, rng: np.random.Generator
) -> FloatArray:
    """The q-quantile ("linear") of ``resamples`` bootstrap resamples of values, drawn exactly.

    A high quantile of a resample depends only on the draws that land among the top values,
    so only those are drawn: with the T largest values as the tail, the number of the n draws
    that land in it is Binomial(n, T/n), each uniform over it. T leaves eight standard
    deviations of room over the r draws the quantile needs; were a resample short anyway, it
    is redrawn. Same distribution as resampling all n values; for a p99 of 10^5 samples it
    draws about 1 300 values a resample instead of 100 000. For low quantiles T = n: plain.
    """
    n = values.size
    h = (n - 1) * q / 100.0
    lo = min(math.floor(h), n - 1)
    frac = h - lo
    need = n - lo  # the resample's lo-th smallest is its need-th largest
    tail_size = min(n, need + math.ceil(8.0 * math.sqrt(need)) + 16)
    tail = np.partition(values, n - tail_size)[n - tail_size :]
    out = np.empty(resamples, dtype=np.float64)
    block = max(1, 4_000_000 // (tail_size + 1))
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        counts = rng.binomial(n, tail_size / n, size=rows)
        short = counts < need
        while np.any(short):  # below 1e-14 a resample with T's margin of 8 sd
            counts[short] = rng.binomial(n, tail_size / n, size=int(np.count_nonzero(short)))
            short = counts < need
        width = int(counts.max())
        drawn = tail[rng.integers(0, tail_size, size=(rows, width))]
        drawn[np.arange(width)[None, :] >= counts[:, None]] = -np.inf  # pads sort first
        kth = width - need  # ascending position of the need-th largest
        wanted = [kth, kth + 1] if frac > 0 and need > 1 else [kth]
        part = np.partition(drawn, wanted, axis=1)
        value = part[:, kth]
        if len(wanted) == 2:
            value = value + frac * (part[:, kth + 1] - value)
        out[start : start + rows] = value
    return out


def subsample(
    values: FloatArray,
    starts: Starts | None,
    cap: int,
    rng: np.random.Generator,
    notes: list[str],
    side: str,
    what: str,
) -> tuple[FloatArray, Starts | None]:
    """At most ``cap`` values drawn at random, in their order (so still grouped by batch),
    with their batch offsets; a note says so."""
    if values.size <= cap:
        return values, starts
    notes.append(f"{what} from a random {cap} of the {values.size} {side} samples")
    chosen = np.sort(rng.choice(values.size, size=cap, replace=False))
    return values[chosen], (subsample_starts(starts, chosen) if starts is not None else None)


def _wilson(x: float, n: float, z: float) -> Interval:
    p = x / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
