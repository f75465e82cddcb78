"""The judge: a pure function from a policy and a run's metrics to a verdict.

Each objective is judged in two steps: ``estimate`` (harness.judge.estimate: the number, its sample
count and its bounds) then ``classify`` (the bounds against target and alert). The run's
decision is derived from the classifications alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from harness.errors import ExitCode
from harness.judge.analysis import (
    SUMMARY_METRICS,
    SUMMARY_PERCENTILES,
    RunMetrics,
    summarise,
)
from harness.judge.confidence import OrderStatistics, linear_ranks, percentile_ranks
from harness.judge.estimate import DEFAULT_CONFIDENCE, Estimate, estimate, more_data
from harness.judge.verdict import CheckResult, Classification, Decision, ObjectiveResult, Verdict
from harness.spec.metrics import SHARE_STAT, MetricDef, percentile_of
from harness.spec.policy import Band, Objective, Policy
from harness.spec.quantity import format_quantity

__all__ = [
    "DEFAULT_CONFIDENCE",
    "Estimate",
    "classify",
    "decide",
    "estimate",
    "evaluate",
    "exit_code",
    "judge_objective",
    "judge_windows",
]

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


def evaluate(
    policy: Policy,
    metrics: RunMetrics,
    invalid_reason: str | None = None,
    checks: Sequence[CheckResult] = (),
    collected: Mapping[str, Any] | None = None,
    windows: Mapping[float, Sequence[tuple[float, float, RunMetrics]]] | None = None,
    interrupted: str | None = None,
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
        interrupted=interrupted,
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
    else PASS; the reason gives the attainment (windows passing) and the worst window, worst
    in the metric's bad direction (the highest latency, the lowest share or rate).

    "Every window passes" is one claim made of k: each window is judged at 1 - (1 - c) / k
    (Bonferroni), so the claim keeps the policy's confidence c however many windows the run
    has, and so does "some window fails".
    """
    if not windows:
        base = judge_objective(objective, _EMPTY, confidence)
        return replace(base, verdict=Classification.INCONCLUSIVE,
                       reason=f"no per-window data for {objective.window:g} s windows")  # fmt: skip
    each = 1.0 - (1.0 - confidence) / len(windows)
    judged = [(lo, hi, judge_objective(objective, m, each)) for lo, hi, m in windows]
    passing = sum(1 for _, _, r in judged if r.verdict is Classification.PASS)
    bad_sign = -1.0 if objective.judged.better == "lower" else 1.0

    def badness(w: tuple[float, float, ObjectiveResult]) -> tuple[int, float]:
        estimate = w[2].estimate
        return _SEVERITY.index(w[2].verdict), (
            math.inf if estimate is None or math.isnan(estimate) else bad_sign * estimate
        )

    worst_lo, worst_hi, worst = min(judged, key=badness)
    start = judged[0][0]
    where = f"{worst_lo - start:.0f}–{worst_hi - start:.0f} s"
    per = f" (each at {each * 100:.4g} %)" if len(judged) > 1 else ""
    reason = (
        f"{passing}/{len(judged)} windows of {objective.window:g} s pass{per}; "
        f"worst ({where}): {worst.reason}"
    )
    return replace(worst, verdict=worst.verdict, reason=reason,
                   n=sum(r.n for _, _, r in judged))  # fmt: skip


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
    """The process exit status for a decision (docs/architecture.md); WARN still exits 0."""
    return _EXIT[decision]


def _q(value: float | None, metric: MetricDef) -> str:
    return format_quantity(value, metric.unit)
