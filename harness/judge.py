"""The judge: a pure function from a policy and a run's metrics to a verdict (STYLE.md, 6).

Each objective is judged in two steps, ``estimate`` (the number, its sample count and, in a
later version, its confidence interval) then ``classify`` (the number against target and alert),
so confidence intervals can slot into the estimate and be honoured by the classification
without changing ``evaluate``. The run's decision is derived from the classifications alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from harness.analysis import (
    SUMMARY_METRICS,
    SUMMARY_PERCENTILES,
    RunMetrics,
    statistic,
    summarise,
)
from harness.confidence import (
    OrderStatistics,
    duration_for_rate,
    linear_ranks,
    mean_interval,
    percentile_ranks,
    percentile_with_interval,
    rate_interval,
    requests_for_share,
    samples_for_mean,
    samples_for_percentile,
    share_interval,
)
from harness.errors import ExitCode
from harness.metrics import SHARE_STAT, MetricDef, percentile_of
from harness.policy import Band, Objective, Policy
from harness.quantity import format_quantity
from harness.verdict import CheckResult, Classification, Decision, ObjectiveResult, Verdict

# What a distribution metric's samples come from, to say what was missing when there are none.
_SOURCE = {
    "ttft": "successful streaming requests",
    "tpot": "successful streaming requests with more than one output token",
    "itl": "successful streaming requests with at least two content chunks",
    "e2el": "successful requests",
    "ttft_intended": "successful streaming requests with an intended send time (open loop)",
    "e2el_intended": "successful requests with an intended send time (open loop)",
    "schedule_lag": "requests with an intended send time (open loop)",
}

DEFAULT_CONFIDENCE = 0.95
_EMPTY = RunMetrics(
    samples=MappingProxyType({}), scalars=MappingProxyType({}), attempted=0, failed=0,
    succeeded=0, good=0, error_classes=MappingProxyType({}), duration_s=None,
)  # fmt: skip

_EXIT = {
    Decision.PASS: ExitCode.PASS,
    Decision.WARN: ExitCode.PASS,
    Decision.FAIL: ExitCode.FAIL,
    Decision.INCONCLUSIVE: ExitCode.INCONCLUSIVE,
    Decision.INVALID: ExitCode.INVALID,
}


@dataclass(frozen=True, slots=True)
class Estimate:
    """An objective's statistic on a run: None with ``missing`` saying why when there is none."""

    value: float | None
    n: int  # samples behind the value (requests attempted, for run-level scalars)
    interval: tuple[float, float] | None = None
    missing: str | None = None


def evaluate(
    policy: Policy,
    metrics: RunMetrics,
    invalid_reason: str | None = None,
    checks: Sequence[CheckResult] = (),
    collected: Mapping[str, Any] | None = None,
    windows: Mapping[float, Sequence[tuple[float, float, RunMetrics]]] | None = None,
) -> Verdict:
    """Judge every objective of policy on metrics; ``invalid_reason`` marks a run unjudgeable.

    Objectives are still judged on an invalid run so the report shows what was measured.
    ``checks`` (client against server) that disagree turn a PASS into a WARN.
    """
    order = _plan(policy, metrics)
    results = tuple(
        judge_windows(obj, (windows or {}).get(obj.window), policy.confidence)
        if obj.window is not None
        else judge_objective(obj, metrics, policy.confidence, order)
        for obj in policy.objectives
    )
    decision = decide(results, invalid_reason)
    if decision is Decision.PASS and any(c.ok is False for c in checks):
        decision = Decision.WARN
    return Verdict(
        decision=decision,
        objectives=results,
        summary=summarise(metrics, order),
        policy=policy.name,
        invalid_reason=invalid_reason,
        checks=tuple(checks),
        collected=collected,
    )


def _plan(policy: Policy, metrics: RunMetrics) -> OrderStatistics:
    """Every rank the objectives and the summary will read, so each metric's samples are
    partitioned once."""
    order = OrderStatistics()
    for name in SUMMARY_METRICS:
        samples = metrics.samples.get(name)
        if samples is not None and samples.size:
            for pct in SUMMARY_PERCENTILES:
                lo_i, hi_i, _ = linear_ranks(int(samples.size), pct)
                order.plan(samples, (lo_i, hi_i))
    for obj in policy.objectives:
        samples = metrics.samples.get(obj.metric)
        q = percentile_of(obj.stat)
        if samples is not None and samples.size and q is not None:
            order.plan(samples, percentile_ranks(int(samples.size), q, policy.confidence))
    return order


def judge_objective(
    objective: Objective,
    metrics: RunMetrics,
    confidence: float = DEFAULT_CONFIDENCE,
    order: OrderStatistics | None = None,
) -> ObjectiveResult:
    """One objective: its estimate on metrics, classified with a reason a person can check;
    an undecided one says how much more data would decide it."""
    est = estimate(objective, metrics, confidence, order)
    verdict, reason = classify(objective, est)
    decided_by_interval = est.n >= objective.min_samples and est.interval is not None
    if verdict is Classification.INCONCLUSIVE and est.value is not None and decided_by_interval:
        hint = more_data(objective, metrics, est, confidence)
        if hint:
            reason = f"{reason}; {hint}"
    target = objective.target
    return ObjectiveResult(
        name=objective.name,
        metric=objective.metric,
        stat=objective.stat,
        estimate=est.value,
        unit=objective.judged.unit,
        interval=est.interval,
        n=est.n,
        verdict=verdict,
        reason=reason,
        critical=objective.critical,
        target=(target.min, target.max) if isinstance(target, Band) else target,
        alert=objective.alert,
    )


_SEVERITY = (
    Classification.FAIL,
    Classification.WARN,
    Classification.INCONCLUSIVE,
    Classification.PASS,
)


def judge_windows(
    objective: Objective,
    windows: Sequence[tuple[float, float, RunMetrics]] | None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> ObjectiveResult:
    """An objective that must hold in every window: judged in each, reported by the worst.

    FAIL if any window fails, else WARN if any warns, else INCONCLUSIVE if any is undecided,
    else PASS; the reason gives the attainment (windows passing) and the worst window.
    """
    if not windows:
        base = judge_objective(objective, _EMPTY, confidence)
        return replace(base, verdict=Classification.INCONCLUSIVE,
                       reason=f"no per-window data for {objective.window:g} s windows")  # fmt: skip
    judged = [(lo, hi, judge_objective(objective, m, confidence)) for lo, hi, m in windows]
    passing = sum(1 for _, _, r in judged if r.verdict is Classification.PASS)
    worst_lo, worst_hi, worst = min(
        judged, key=lambda w: (_SEVERITY.index(w[2].verdict), -(w[2].estimate or 0.0))
    )
    start = judged[0][0]
    where = f"{worst_lo - start:.0f}–{worst_hi - start:.0f} s"
    reason = (
        f"{passing}/{len(judged)} windows of {objective.window:g} s pass; "
        f"worst ({where}): {worst.reason}"
    )
    return replace(worst, verdict=worst.verdict, reason=reason,
                   n=sum(r.n for _, _, r in judged))  # fmt: skip


def estimate(
    objective: Objective,
    metrics: RunMetrics,
    confidence: float = DEFAULT_CONFIDENCE,
    order: OrderStatistics | None = None,
) -> Estimate:
    """The objective's stat with its interval (harness.confidence), or why there is none.

    Client percentiles get order-statistic bounds, means normal bounds, the error rate
    Clopper-Pearson bounds, request and goodput rates Poisson bounds. A server histogram's
    percentile gets the bucket that holds it. Sampled series (GPU, queue depth) are
    autocorrelated, so no independent-sample interval applies: their stat is a point value.
    """
    metric = objective.definition
    if objective.stat == SHARE_STAT:
        return _share_estimate(objective, metrics, confidence)
    if metric.kind == "histogram":
        return _histogram_estimate(objective, metrics)
    if metric.kind == "scalar":
        n = metrics.attempted
        if metric.name not in metrics.scalars:
            why = metrics.missing.get(metric.name, "not measured in this run")
            return Estimate(None, n, missing=f"no {metric.name} data: {why}")
        value = metrics.scalars[metric.name]
        if value is None or not math.isfinite(value):
            why = "no requests attempted" if n == 0 else "no measured duration"
            return Estimate(None, n, missing=f"no {metric.name}: {why} in the measured window")
        return Estimate(value, n, interval=_scalar_interval(metric.name, metrics, confidence))
    samples = metrics.samples.get(metric.name)
    if samples is None:
        why = metrics.missing.get(metric.name, "not collected in this run")
        return Estimate(None, 0, missing=f"no {metric.name} data: {why}")
    if samples.size == 0:
        source = _SOURCE.get(metric.name, "samples")
        if metric.source != "client":
            return Estimate(None, 0, missing=f"no {metric.name} samples in the measured window")
        return Estimate(None, 0, missing=f"no {metric.name} samples: the run had no {source}")
    if metric.source == "client":
        q = percentile_of(objective.stat)
        if q is not None:
            value, interval = percentile_with_interval(samples, q, confidence, order)
            return Estimate(value, int(samples.size), interval=interval)
        if objective.stat == "mean":
            return Estimate(
                float(np.mean(samples)), int(samples.size), mean_interval(samples, confidence)
            )
    return Estimate(statistic(samples, objective.stat), int(samples.size))


def _scalar_interval(
    name: str, metrics: RunMetrics, confidence: float
) -> tuple[float, float] | None:
    if name == "error_rate":
        return share_interval(metrics.failed, metrics.attempted, confidence)
    duration = metrics.duration_s
    if duration is None or duration <= 0:
        return None
    if name == "request_rate":
        return rate_interval(metrics.succeeded, duration, confidence)
    if name == "goodput":
        return rate_interval(metrics.good, duration, confidence)
    return None  # token rates are not Poisson counts; server counters have no sample count


def more_data(
    objective: Objective, metrics: RunMetrics, est: Estimate, confidence: float
) -> str | None:
    """How many requests (or seconds) would decide an objective whose interval straddles a
    bound, if the run went on as measured; None where more data cannot help."""
    assert est.value is not None
    assert est.interval is not None
    bound = _straddled(objective, est.interval, est.value)
    metric = objective.definition
    if bound is None or metric.kind == "histogram":
        return None
    attempted = max(metrics.attempted, 1)
    needed: int | None = None
    if metric.name == "error_rate":
        needed = requests_for_share(est.value, bound, confidence)
    elif objective.stat == SHARE_STAT:
        samples = metrics.samples.get(metric.name)
        n_samples = requests_for_share(est.value, bound, confidence)
        if n_samples is None or samples is None or samples.size == 0:
            return None
        needed = math.ceil(n_samples * attempted / samples.size)
    elif metric.name in ("request_rate", "goodput"):
        seconds = duration_for_rate(est.value, bound, confidence)
        measured = metrics.duration_s or 0.0
        if seconds is None:
            return None
        return (
            f"about {seconds:.0f} s of measurement would decide ({seconds - measured:+.0f} s), "
            "if the rate stays as measured"
        )
    else:
        samples = metrics.samples.get(metric.name)
        if samples is None or samples.size == 0:
            return None
        q = percentile_of(objective.stat)
        if q is not None:
            share = float(np.count_nonzero(samples <= bound)) / samples.size
            n_samples = samples_for_percentile(share, q / 100.0, confidence)
        elif objective.stat == "mean" and samples.size > 1:
            sd = float(np.std(samples, ddof=1))
            n_samples = samples_for_mean(est.value, sd, bound, confidence)
        else:
            return None
        if n_samples is None:
            return None
        needed = math.ceil(n_samples * attempted / samples.size)  # samples per request
    if needed is None:
        return None
    more = max(needed - metrics.attempted, 0)
    return (
        f"about {needed:,} requests would decide ({more:,} more than the "
        f"{metrics.attempted:,} measured), if the run goes on as measured"
    )


def _straddled(objective: Objective, interval: tuple[float, float], value: float) -> float | None:
    """The target or alert bound inside the interval, the one nearest the estimate."""
    lo, hi = interval
    target = objective.target
    bounds = [target.min, target.max] if isinstance(target, Band) else [target]
    if objective.alert is not None:
        bounds.append(objective.alert)
    inside = [b for b in bounds if lo <= b <= hi]
    return min(inside, key=lambda b: abs(b - value)) if inside else None


def _share_estimate(objective: Objective, metrics: RunMetrics, confidence: float) -> Estimate:
    """The share of samples at or under the objective's bound: Clopper-Pearson bounds for
    client samples, the bucket bracket for a server histogram (exact on a bucket bound), a
    point value for sampled series."""
    name = objective.definition.name
    bound = objective.bound
    assert bound is not None  # the policy pairs share_under with a bound
    hist = metrics.histograms.get(name)
    if objective.definition.kind == "histogram":
        if hist is None or hist.count <= 0:
            why = metrics.missing.get(name, "no observations in the measured window")
            return Estimate(None, 0, missing=f"no {name} data: {why}")
        found = hist.share_under(bound)
        assert found is not None
        return Estimate(found[0], round(hist.count), interval=(found[1], found[2]))
    samples = metrics.samples.get(name)
    if samples is None or samples.size == 0:
        why = metrics.missing.get(name, "no samples in the measured window")
        return Estimate(None, 0, missing=f"no {name} data: {why}")
    n = int(samples.size)
    k = int(np.count_nonzero(samples <= bound))
    if objective.definition.source != "client":
        return Estimate(k / n, n)
    return Estimate(k / n, n, interval=share_interval(k, n, confidence))


def _histogram_estimate(objective: Objective, metrics: RunMetrics) -> Estimate:
    name = objective.definition.name
    hist = metrics.histograms.get(name)
    if hist is None:
        why = metrics.missing.get(name, "not collected in this run")
        return Estimate(None, 0, missing=f"no {name} data: {why}")
    n = round(hist.count)
    if hist.count <= 0:
        return Estimate(None, 0, missing=f"no {name} observations in the measured window")
    if objective.stat == "mean":
        mean = hist.mean
        return Estimate(mean, n) if mean is not None else Estimate(None, n, missing="no sum")
    q = percentile_of(objective.stat)
    assert q is not None  # the policy checked the stat
    found = hist.quantile(q / 100.0)
    if found is None:
        return Estimate(None, n, missing=f"no {name} observations in the measured window")
    value, lower, upper = found
    return Estimate(value, n, interval=(lower, upper))


def classify(objective: Objective, est: Estimate) -> tuple[Classification, str]:
    """PASS/WARN/FAIL against target and alert in the metric's direction, or INCONCLUSIVE.

    A bound target passes strictly ("P50 < 500ms"); with no alert, not passing is FAIL. A band
    passes inside [min, max]; outside it, FAIL beyond the alert in the bad direction, else WARN
    (with no alert, any miss in the bad direction is FAIL, a miss in the good one WARN).
    """
    metric = objective.judged
    if est.value is None or math.isnan(est.value):
        return Classification.INCONCLUSIVE, est.missing or f"no {metric.name} data"
    if est.n < objective.min_samples:
        what = "requests attempted" if metric.kind == "scalar" else f"{metric.name} samples"
        return (
            Classification.INCONCLUSIVE,
            f"only {est.n} {what}, fewer than the {objective.min_samples} required",
        )
    if est.interval is not None:
        lo, hi = est.interval
        # The value lies in (lo, hi]: judge just inside each end, so a bound on a bucket
        # boundary decides (a p99 in (500 ms, 750 ms] is above a 500 ms alert).
        inner = (math.nextafter(lo, math.inf), math.nextafter(hi, -math.inf))
        ends = {_classify_value(objective, x)[0] for x in inner}
        verdict, reason = _classify_value(objective, est.value)
        label = _label(objective)
        span = f"{_q(lo, metric)}–{_q(hi, metric)}"
        order = (Classification.PASS, Classification.WARN, Classification.FAIL)
        could_be = " or ".join(c.value for c in order if c in ends | {verdict})
        if objective.definition.kind == "histogram":
            if ends != {verdict}:
                return (
                    Classification.INCONCLUSIVE,
                    f"{label} lies in the bucket {span}, where it could be {could_be}: the "
                    "server's buckets cannot decide (set the bound on a bucket boundary, or "
                    "judge the client's metric)",
                )
            return verdict, f"{reason} (bucket {span})"
        if ends != {verdict}:
            return (
                Classification.INCONCLUSIVE,
                f"{label} {_q(est.value, metric)}, but its bounds {span} leave it undecided "
                f"({could_be})",
            )
        return verdict, f"{reason}; bounds {span}"
    return _classify_value(objective, est.value)


def _label(objective: Objective) -> str:
    """How a reason names the statistic: "p99 e2el", "error_rate", "share of e2el ≤ 2 s"."""
    if objective.stat == SHARE_STAT:
        return f"share of {objective.judged.name}"
    name = objective.definition.name
    return name if objective.stat == "value" else f"{objective.stat} {name}"


def _classify_value(objective: Objective, value: float) -> tuple[Classification, str]:
    """A value against target and alert, in the metric's direction."""
    metric = objective.judged
    label = _label(objective)
    shown = f"{label} {_q(value, metric)}"
    alert = objective.alert
    lower = metric.better == "lower"

    def beyond_alert() -> bool:
        return alert is not None and (value > alert if lower else value < alert)

    alert_note = f"alert {_q(alert, metric)}" if alert is not None else ""
    target = objective.target
    if isinstance(target, Band):
        band = f"target {_q(target.min, metric)}–{_q(target.max, metric)}"
        if target.min <= value <= target.max:
            return Classification.PASS, f"{shown} within {band}"
        side = "above" if value > target.max else "below"
        bad_side = (side == "above") == lower
        if beyond_alert():
            op = ">" if lower else "<"
            return Classification.FAIL, f"{shown} {op} {alert_note} ({band})"
        if bad_side and alert is None:
            return Classification.FAIL, f"{shown} {side} {band}"
        within = f", within {alert_note}" if bad_side else ""
        return Classification.WARN, f"{shown} {side} {band}{within}"

    bound = f"target {_q(target, metric)}"
    if value < target if lower else value > target:
        return Classification.PASS, f"{shown} {'<' if lower else '>'} {bound}"
    if beyond_alert():
        return Classification.FAIL, f"{shown} {'>' if lower else '<'} {alert_note} ({bound})"
    missed = f"{shown} {'≥' if lower else '≤'} {bound}"
    if alert is None:
        return Classification.FAIL, missed
    return Classification.WARN, f"{missed}, within {alert_note}"


def decide(results: Iterable[ObjectiveResult], invalid_reason: str | None = None) -> Decision:
    """The run's decision: critical objectives veto; advisory ones can only warn.

    INVALID if the run was invalid; FAIL on a critical FAIL; INCONCLUSIVE on a critical
    INCONCLUSIVE; WARN on any WARN or advisory FAIL; else PASS. No data never passes: when no
    objective could be judged at all the decision is INCONCLUSIVE.
    """
    if invalid_reason is not None:
        return Decision.INVALID
    judged = list(results)
    critical = {r.verdict for r in judged if r.critical}
    every = {r.verdict for r in judged}
    if Classification.FAIL in critical:
        return Decision.FAIL
    if Classification.INCONCLUSIVE in critical or every <= {Classification.INCONCLUSIVE}:
        return Decision.INCONCLUSIVE
    if every & {Classification.WARN, Classification.FAIL}:
        return Decision.WARN
    return Decision.PASS


def exit_code(decision: Decision) -> ExitCode:
    """The process exit status for a decision (DESIGN.md, "Exit codes"); WARN still exits 0."""
    return _EXIT[decision]


def _q(value: float | None, metric: MetricDef) -> str:
    return format_quantity(value, metric.unit)
