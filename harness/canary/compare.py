"""Canary against baseline: a per-metric two-sample comparison and a PROMOTE/HOLD/ROLLBACK call.

An SLO verdict says whether the canary meets absolute targets; this says whether it is worse
than what runs today, which catches a regression that still fits inside the targets. The
method is Kayenta's Mann-Whitney classifier (Netflix/Google's canary judge), with one change:
a metric is High or Low only when its whole confidence interval clears the allowed change, so
a tolerance is never crossed on noise.

Per latency metric (client distributions: ttft, tpot, itl, e2el, ...), canary against baseline:

- Mann-Whitney U, two-sided (``scipy.stats.mannwhitneyu``; the normal approximation with tie
  correction once both sides exceed 8 samples): the p-value, reported, not decided on.
- Hodges-Lehmann shift: the median of all canary - baseline pairwise differences, with its
  distribution-free interval from their order statistics (Lehmann 1963; the k-th smallest and
  k-th largest difference, k = floor(nm/2 - z sqrt(nm(n+m+1)/12)), the normal approximation
  of U's null distribution, rounded down so coverage is at least nominal). This interval is
  the inversion of the U test, so it excludes 0 exactly when the test rejects.
- p99 difference with a percentile-bootstrap interval (independent resamples of each side).
- The classification, from the HL interval against ``allowed × baseline median``:
  High when the interval lies entirely above it, Low when entirely below its negative,
  Pass otherwise; NoData when either side has fewer than ``min_samples`` samples.

High and Low name the direction of the change, as in Kayenta; whether it is a failure comes
from the metric's declaration: High is worse for a lower-is-better metric, Low for a
higher-is-better one. The error rate is two proportions: Fisher's exact test for the p-value
and Newcombe's hybrid score interval (from two Wilson intervals) on the difference, classified
with the same rule against ``allowed × baseline rate``; with a baseline free of errors that is
"significantly above zero".
"""

from __future__ import annotations

import enum
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from scipy import stats

from harness.canary.twosample import (
    bootstrap_quantile_diff,
    hodges_lehmann,
    mann_whitney_p,
    newcombe_interval,
    rank_effects,
    subsample,
    u_variance_ratio,
)
from harness.judge.analysis import RunMetrics
from harness.judge.confidence import FloatArray, Interval
from harness.judge.dependence import INDEPENDENT, Starts, kept_starts, share_effect
from harness.spec.metrics import METRICS, Better, MetricDef
from harness.spec.policy import Policy
from harness.spec.quantity import format_quantity

COMPARISON_SCHEMA: Final = 1
#: Compared even when no objective names them (advisory then): a canary's latency is
#: always worth a look, and a rise in errors always worth a warning.
ALWAYS_COMPARED: Final = ("ttft", "e2el", "error_rate")
DEFAULT_MIN_SAMPLES: Final = 50
DEFAULT_ALLOWED: Final = 0.10
DEFAULT_RESAMPLES: Final = 1000
#: Each side is subsampled to this many values for the HL shift: its n*m pairwise differences
#: are materialised (2 000 a side: 4 million, about 30 ms to partition).
HL_MAX: Final = 2000
#: Above this many values a side is subsampled for the U test and the bootstrap (seconds
#: otherwise on pooled ITL); the medians and p99s themselves always use every sample.
TEST_MAX: Final = 1_000_000
#: Changes in mean prompt or output length, or in request count, beyond this share are noted.
LIKE_TOLERANCE: Final = 0.10


class ShiftClass(enum.StrEnum):
    """Kayenta's per-metric classes; High and Low are directions, not verdicts."""

    PASS = "Pass"
    HIGH = "High"
    LOW = "Low"
    NODATA = "NoData"


class CanaryDecision(enum.StrEnum):
    PROMOTE = "PROMOTE"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK"


@dataclass(frozen=True, slots=True)
class MetricComparison:
    """One metric, canary against baseline. Shifts are canary - baseline, in the metric's unit.

    For a distribution: ``canary``/``baseline`` are medians, ``shift``/``interval`` the
    Hodges-Lehmann shift and its interval, ``test`` "mann-whitney". For the error rate: the
    two rates, their difference and Newcombe's interval, ``test`` "fisher-exact", no p99.
    ``margin`` is the absolute change allowed either way (``allowed`` × the baseline value).
    """

    metric: str
    unit: str
    better: Better
    critical: bool
    test: str
    n_canary: int
    n_baseline: int
    canary: float | None
    baseline: float | None
    shift: float | None
    interval: Interval | None
    relative_shift: float | None
    allowed: float
    margin: float | None
    p_value: float | None
    p99_canary: float | None
    p99_baseline: float | None
    p99_diff: float | None
    p99_interval: Interval | None
    classification: ShiftClass
    reason: str
    notes: tuple[str, ...] = ()

    @property
    def worse(self) -> bool:
        """The classification is a significant change in the metric's bad direction."""
        bad = ShiftClass.HIGH if self.better == "lower" else ShiftClass.LOW
        return self.classification is bad

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "better": self.better,
            "critical": self.critical,
            "test": self.test,
            "n_canary": self.n_canary,
            "n_baseline": self.n_baseline,
            "canary": _num(self.canary),
            "baseline": _num(self.baseline),
            "shift": _num(self.shift),
            "interval": _pair(self.interval),
            "relative_shift": _num(self.relative_shift),
            "allowed": self.allowed,
            "margin": _num(self.margin),
            "p_value": _num(self.p_value),
            "p99_canary": _num(self.p99_canary),
            "p99_baseline": _num(self.p99_baseline),
            "p99_diff": _num(self.p99_diff),
            "p99_interval": _pair(self.p99_interval),
            "classification": self.classification.value,
            "worse": self.worse,
            "reason": self.reason,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class Comparison:
    """The canary's comparison with its baseline; ``notes`` say where it is not like with like,
    ``warnings`` name advisory metrics that got worse (they do not change the decision)."""

    decision: CanaryDecision
    reason: str
    metrics: tuple[MetricComparison, ...]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    confidence: float
    min_samples: int
    resamples: int
    seed: int
    labels: Mapping[str, str] = field(default_factory=dict)  # canary/baseline run names

    def metric(self, name: str) -> MetricComparison:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(name)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "schema": COMPARISON_SCHEMA,
            "decision": self.decision.value,
            "reason": self.reason,
            **{f"{k}_run": v for k, v in self.labels.items()},
            "confidence": self.confidence,
            "min_samples": self.min_samples,
            "resamples": self.resamples,
            "seed": self.seed,
            "metrics": [m.to_json_dict() for m in self.metrics],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }


def compare(
    policy: Policy,
    canary: RunMetrics,
    baseline: RunMetrics,
    *,
    confidence: float | None = None,
    allowed_increase: float = DEFAULT_ALLOWED,
    allowed: Mapping[str, float] | None = None,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    canary_workload: Mapping[str, Any] | None = None,
    baseline_workload: Mapping[str, Any] | None = None,
) -> Comparison:
    """Compare every client latency metric the policy names, plus ttft, e2el and error_rate.

    A metric is critical when any objective naming it is. ``allowed_increase`` is the relative
    change tolerated (of the baseline median or rate), ``allowed`` overrides it per metric.
    ``confidence`` is the two-sided coverage of every interval, the policy's own unless given
    (so a metric is High or Low at one-sided (1 + c) / 2, never less sure than the judge's
    one-sided bounds at c). Everything random (bootstrap,
    subsamples) draws from ``seed`` and the metric name, so a comparison is reproducible and
    one metric's numbers do not depend on which others were compared.
    """
    if confidence is None:
        confidence = policy.confidence
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if min_samples < 1 or resamples < 1:
        raise ValueError("min_samples and resamples must be at least 1")
    overrides = dict(allowed or {})
    if any(v < 0 for v in [allowed_increase, *overrides.values()]):
        raise ValueError("an allowed change must not be negative")
    results = []
    for name, critical in compared_metrics(policy).items():
        share = overrides.get(name, allowed_increase)
        definition = METRICS[name]
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if definition.kind == "scalar":
            results.append(
                compare_errors(
                    canary,
                    baseline,
                    critical=critical,
                    allowed=share,
                    confidence=confidence,
                    min_samples=min_samples,
                )
            )
        else:
            results.append(
                compare_samples(
                    definition,
                    canary.samples.get(name, _EMPTY),
                    baseline.samples.get(name, _EMPTY),
                    canary_batches=canary.batches.get(name),
                    baseline_batches=baseline.batches.get(name),
                    critical=critical,
                    allowed=share,
                    confidence=confidence,
                    min_samples=min_samples,
                    resamples=resamples,
                    rng=rng,
                )
            )
    decision, reason, warnings = decide_promotion(results, min_samples)
    return Comparison(
        decision=decision,
        reason=reason,
        metrics=tuple(results),
        notes=tuple(like_with_like(canary, baseline, canary_workload, baseline_workload)),
        warnings=tuple(warnings),
        confidence=confidence,
        min_samples=min_samples,
        resamples=resamples,
        seed=seed,
    )


def compared_metrics(policy: Policy) -> dict[str, bool]:
    """Metric -> critical, in policy order, then the always-compared ones not named."""
    out: dict[str, bool] = {}
    for obj in policy.objectives:
        d = obj.definition
        comparable = (d.kind == "distribution" and d.source == "client") or d.name == "error_rate"
        if comparable:
            out[d.name] = out.get(d.name, False) or obj.critical
    for name in ALWAYS_COMPARED:
        out.setdefault(name, False)
    return out


def compare_samples(
    definition: MetricDef,
    canary: FloatArray,
    baseline: FloatArray,
    *,
    critical: bool = True,
    allowed: float = DEFAULT_ALLOWED,
    confidence: float = 0.95,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    resamples: int = DEFAULT_RESAMPLES,
    rng: np.random.Generator | None = None,
    canary_batches: Starts | None = None,
    baseline_batches: Starts | None = None,
) -> MetricComparison:
    """One distribution metric: U test, HL shift and interval, bootstrap p99 difference.

    With each sample's batch of requests (``RunMetrics.batches``), every interval and the
    p-value take each side's design effect, so gaps of one request count as what they are.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    c, c_batches = _finite_with(canary, canary_batches)
    b, b_batches = _finite_with(baseline, baseline_batches)
    n, m = int(c.size), int(b.size)
    unit = definition.unit
    notes: list[str] = []
    p_value = shift = interval = p99_interval = relative = margin = None
    if n and m:
        c_test, c_test_b = subsample(
            c, c_batches, TEST_MAX, rng, notes, "canary", "U test and bootstrap"
        )
        b_test, b_test_b = subsample(
            b, b_batches, TEST_MAX, rng, notes, "baseline", "U test and bootstrap"
        )
        effects = rank_effects(c_test, b_test, c_test_b, b_test_b, confidence)
        p_value = mann_whitney_p(c_test, b_test, u_variance_ratio(n, m, *effects))
        c_hl, c_hl_b = subsample(c, c_batches, HL_MAX, rng, notes, "canary", "HL shift")
        b_hl, b_hl_b = subsample(b, b_batches, HL_MAX, rng, notes, "baseline", "HL shift")
        hl_effects = rank_effects(c_hl, b_hl, c_hl_b, b_hl_b, confidence)
        ratio = u_variance_ratio(c_hl.size, b_hl.size, *hl_effects)
        shift, interval = hodges_lehmann(c_hl, b_hl, confidence, ratio)
        p99_interval = bootstrap_quantile_diff(c_test, b_test, 99.0, confidence, resamples, rng)
        p99_interval = _widened(
            p99_interval,
            _tail_effect(c, c_batches, confidence),
            _tail_effect(b, b_batches, confidence),
            c,
            b,
        )
        if max(*effects, *hl_effects) > 1.0:
            notes.append(
                f"dependent samples: design effects {hl_effects[0]:.2g} (canary) and "
                f"{hl_effects[1]:.2g} (baseline) widen the intervals"
            )
        median_b = float(np.median(b))
        relative = shift / median_b if median_b else None
        margin = allowed * abs(median_b)
    basis = f"{allowed * 100:g} % of the baseline median"
    cls, reason = classify_shift(interval, margin, n, m, min_samples, unit, basis)
    p99_c, p99_b = _p99(c), _p99(b)
    return MetricComparison(
        metric=definition.name,
        unit=unit,
        better=definition.better,
        critical=critical,
        test="mann-whitney",
        n_canary=n,
        n_baseline=m,
        canary=_median(c),
        baseline=_median(b),
        shift=shift,
        interval=interval,
        relative_shift=relative,
        allowed=allowed,
        margin=margin,
        p_value=p_value,
        p99_canary=p99_c,
        p99_baseline=p99_b,
        p99_diff=None if p99_c is None or p99_b is None else p99_c - p99_b,
        p99_interval=p99_interval,
        classification=cls,
        reason=reason,
        notes=tuple(notes),
    )


def compare_errors(
    canary: RunMetrics,
    baseline: RunMetrics,
    *,
    critical: bool = True,
    allowed: float = DEFAULT_ALLOWED,
    confidence: float = 0.95,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> MetricComparison:
    """The error rates as two proportions: Fisher's exact p, Newcombe's interval on the gap.

    Newcombe's hybrid score interval (1998, method 10) keeps its coverage at 0 or 1 error,
    where the Wald interval collapses to a point; Fisher's test is exact at any count.
    """
    definition = METRICS["error_rate"]
    n, m = canary.attempted, baseline.attempted
    x, y = canary.failed, baseline.failed
    p_c = x / n if n else None
    p_b = y / m if m else None
    p_value = shift = interval = relative = margin = None
    if p_c is not None and p_b is not None:
        p_value = min(1.0, float(stats.fisher_exact(np.array([[x, n - x], [y, m - y]])).pvalue))
        one_sided = 0.5 + confidence / 2.0  # errors in bursts: effective counts per side
        d_c = canary.effects.get("error_rate", INDEPENDENT).inflation(one_sided)
        d_b = baseline.effects.get("error_rate", INDEPENDENT).inflation(one_sided)
        interval = newcombe_interval(x / d_c, n / d_c, y / d_b, m / d_b, confidence)
        shift = p_c - p_b
        relative = shift / p_b if p_b else None
        margin = allowed * p_b
    basis = f"{allowed * 100:g} % of the baseline rate"
    cls, reason = classify_shift(interval, margin, n, m, min_samples, "ratio", basis)
    return MetricComparison(
        metric=definition.name,
        unit=definition.unit,
        better=definition.better,
        critical=critical,
        test="fisher-exact",
        n_canary=n,
        n_baseline=m,
        canary=p_c,
        baseline=p_b,
        shift=shift,
        interval=interval,
        relative_shift=relative,
        allowed=allowed,
        margin=margin,
        p_value=p_value,
        p99_canary=None,
        p99_baseline=None,
        p99_diff=None,
        p99_interval=None,
        classification=cls,
        reason=reason,
    )


def classify_shift(
    interval: Interval | None,
    margin: float | None,
    n: int,
    m: int,
    min_samples: int,
    unit: str,
    basis: str,
) -> tuple[ShiftClass, str]:
    """Kayenta-like: High/Low only when the whole interval clears ``±margin``; and why.

    ``basis`` says what the margin is in the reason, e.g. "10 % of the baseline median".
    """
    if min(n, m) < min_samples or interval is None or margin is None:
        return ShiftClass.NODATA, _too_few(n, m, min_samples)
    low, high = interval
    span = f"[{_signed(low, unit)}, {_signed(high, unit)}]"
    allowed = format_quantity(margin, unit)
    if low > margin:
        return ShiftClass.HIGH, f"shift {span} lies above +{allowed} ({basis})"
    if high < -margin:
        return ShiftClass.LOW, f"shift {span} lies below -{allowed} ({basis})"
    return ShiftClass.PASS, f"shift {span} does not clear ±{allowed} ({basis})"


def decide_promotion(
    results: Sequence[MetricComparison], min_samples: int
) -> tuple[CanaryDecision, str, list[str]]:
    """ROLLBACK on a critical metric worse than allowed; else HOLD on critical NoData; else
    PROMOTE. Advisory metrics that got worse come back as warnings."""
    worse = [r for r in results if r.critical and r.worse]
    nodata = [r for r in results if r.critical and r.classification is ShiftClass.NODATA]
    warnings = [
        f"{r.metric} (advisory) is {r.classification.value}: {r.reason}"
        for r in results
        if not r.critical and r.worse
    ]
    if worse:
        what = "; ".join(f"{r.metric} {r.classification.value}: {r.reason}" for r in worse)
        return CanaryDecision.ROLLBACK, what, warnings
    if nodata:
        counts = ", ".join(f"{r.metric} {r.n_canary} / {r.n_baseline}" for r in nodata)
        return (
            CanaryDecision.HOLD,
            f"too few samples to compare (canary / baseline: {counts}); "
            f"at least {min_samples} per side are needed: run longer or at a higher rate",
            warnings,
        )
    return CanaryDecision.PROMOTE, "no critical metric is worse than allowed", warnings


def like_with_like(
    canary: RunMetrics,
    baseline: RunMetrics,
    canary_workload: Mapping[str, Any] | None = None,
    baseline_workload: Mapping[str, Any] | None = None,
) -> list[str]:
    """Where the runs differ in what they asked for: a latency gap may be a workload gap."""
    notes = []
    for label, c, b, unit in (
        ("prompt lengths", canary.prompt_tokens_mean, baseline.prompt_tokens_mean, " tokens"),
        ("output lengths", canary.output_tokens_mean, baseline.output_tokens_mean, " tokens"),
        ("request counts", float(canary.attempted), float(baseline.attempted), ""),
    ):
        if c is None or b is None or not _differs(c, b):
            continue
        change = f" ({(c - b) / b * 100:+.0f} %)" if b else ""
        notes.append(
            f"{label} differ: canary {c:.0f} vs baseline {b:.0f}{unit}{change}: "
            "the comparison is not like with like"
        )
    if canary_workload is not None and baseline_workload is not None:
        keys = sorted(
            k
            for k in set(canary_workload) | set(baseline_workload)
            if canary_workload.get(k) != baseline_workload.get(k)
        )
        if keys:
            notes.append(
                f"the scenarios' workloads differ ({', '.join(keys)}): "
                "the comparison is not like with like"
            )
    return notes


def _finite_with(values: FloatArray, starts: Starts | None) -> tuple[FloatArray, Starts | None]:
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if starts is None or int(starts[-1]) != v.size:
        return v[finite], None
    return v[finite], kept_starts(starts, finite)


def _tail_effect(values: FloatArray, starts: Starts | None, confidence: float) -> float:
    """The design effect of the p99 (its indicator), at the one-sided (1 + c) / 2."""
    if starts is None or values.size < 2:
        return 1.0
    p99 = float(np.percentile(values, 99.0))
    return share_effect(starts, values <= p99).inflation(0.5 + confidence / 2.0)


def _widened(
    interval: Interval, d_c: float, d_b: float, canary: FloatArray, baseline: FloatArray
) -> Interval:
    """The independent resamples' p99-difference interval, widened about the observed
    difference by the larger side's design effect (its standard error grows as sqrt(deff))."""
    scale = math.sqrt(max(d_c, d_b, 1.0))
    if scale == 1.0:
        return interval
    diff = float(np.percentile(canary, 99.0) - np.percentile(baseline, 99.0))
    return diff - (diff - interval[0]) * scale, diff + (interval[1] - diff) * scale


def _differs(canary: float, baseline: float) -> bool:
    if baseline == 0:
        return canary != 0
    return abs(canary - baseline) / abs(baseline) > LIKE_TOLERANCE


def _too_few(n: int, m: int, min_samples: int) -> str:
    return f"too few samples: canary {n}, baseline {m}; at least {min_samples} per side are needed"


def _median(values: FloatArray) -> float | None:
    return float(np.median(values)) if values.size else None


def _p99(values: FloatArray) -> float | None:
    return float(np.percentile(values, 99.0, method="linear")) if values.size else None


def _signed(value: float, unit: str) -> str:
    text = format_quantity(abs(value), unit)
    return ("-" if value < 0 else "+") + text


def _num(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _pair(pair: Interval | None) -> list[float | None] | None:
    return None if pair is None else [_num(pair[0]), _num(pair[1])]


_EMPTY: Final[FloatArray] = np.zeros(0, dtype=np.float64)


def allowances(policy: Policy) -> dict[str, float]:
    """Per metric, the worsening its objectives tolerate: the strictest of their
    ``allowed_increase`` (metrics without one get the comparison's default)."""
    allowed: dict[str, float] = {}
    for obj in policy.objectives:
        if obj.allowed_increase is not None:
            allowed[obj.metric] = min(obj.allowed_increase, allowed.get(obj.metric, math.inf))
    return allowed
