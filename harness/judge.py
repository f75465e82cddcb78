"""The judge: a pure function from a policy and a run's metrics to a verdict (STYLE.md, 6).

Each objective is judged in two steps, ``estimate`` (the number, its sample count and, in a
later version, its confidence interval) then ``classify`` (the number against target and alert),
so confidence intervals can slot into the estimate and be honoured by the classification
without changing ``evaluate``. The run's decision is derived from the classifications alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.analysis import RunMetrics, statistic, summarise
from harness.errors import ExitCode
from harness.metrics import MetricDef, percentile_of
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
) -> Verdict:
    """Judge every objective of policy on metrics; ``invalid_reason`` marks a run unjudgeable.

    Objectives are still judged on an invalid run so the report shows what was measured.
    ``checks`` (client against server) that disagree turn a PASS into a WARN.
    """
    results = tuple(judge_objective(obj, metrics) for obj in policy.objectives)
    decision = decide(results, invalid_reason)
    if decision is Decision.PASS and any(c.ok is False for c in checks):
        decision = Decision.WARN
    return Verdict(
        decision=decision,
        objectives=results,
        summary=summarise(metrics),
        policy=policy.name,
        invalid_reason=invalid_reason,
        checks=tuple(checks),
        collected=collected,
    )


def judge_objective(objective: Objective, metrics: RunMetrics) -> ObjectiveResult:
    """One objective: its estimate on metrics, classified with a reason a person can check."""
    est = estimate(objective, metrics)
    verdict, reason = classify(objective, est)
    target = objective.target
    return ObjectiveResult(
        name=objective.name,
        metric=objective.metric,
        stat=objective.stat,
        estimate=est.value,
        unit=objective.definition.unit,
        interval=est.interval,
        n=est.n,
        verdict=verdict,
        reason=reason,
        critical=objective.critical,
        target=(target.min, target.max) if isinstance(target, Band) else target,
        alert=objective.alert,
    )


def estimate(objective: Objective, metrics: RunMetrics) -> Estimate:
    """The objective's stat over the run's samples, or the run-level scalar for stat 'value'.

    A server histogram's percentile comes with the bucket that holds it as its interval: the
    bucket is certain, the interpolated estimate is not.
    """
    metric = objective.definition
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
        return Estimate(value, n)
    samples = metrics.samples.get(metric.name)
    if samples is None:
        why = metrics.missing.get(metric.name, "not collected in this run")
        return Estimate(None, 0, missing=f"no {metric.name} data: {why}")
    if samples.size == 0:
        source = _SOURCE.get(metric.name, "samples")
        if metric.source != "client":
            return Estimate(None, 0, missing=f"no {metric.name} samples in the measured window")
        return Estimate(None, 0, missing=f"no {metric.name} samples: the run had no {source}")
    return Estimate(statistic(samples, objective.stat), int(samples.size))


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
    metric = objective.definition
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
        label = f"{objective.stat} {metric.name}"
        span = f"{_q(lo, metric)}–{_q(hi, metric)}"
        if ends != {verdict}:
            return (
                Classification.INCONCLUSIVE,
                f"{label} lies in the bucket {span}, where it could be "
                f"{' or '.join(sorted(c.value for c in ends | {verdict}))}: the server's "
                "buckets cannot decide (set the bound on a bucket boundary, or judge the "
                "client's metric)",
            )
        return verdict, f"{reason} (bucket {span})"
    return _classify_value(objective, est.value)


def _classify_value(objective: Objective, value: float) -> tuple[Classification, str]:
    """A value against target and alert, in the metric's direction."""
    metric = objective.definition
    label = metric.name if objective.stat == "value" else f"{objective.stat} {metric.name}"
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
