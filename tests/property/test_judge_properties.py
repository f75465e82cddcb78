"""Invariants of the judge that must hold for any policy and any run."""

from __future__ import annotations

import math
from dataclasses import fields, replace
from types import MappingProxyType

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import objectives, policies, record_lists, run_metrics

from harness.judge.analysis import DISTRIBUTION_METRICS, RunMetrics, analyse
from harness.judge.classify import classify, decide, estimate, evaluate, judge_objective
from harness.judge.verdict import Classification, Decision, ObjectiveResult
from harness.records.record import RequestRecord
from harness.spec.policy import Band, Objective, Policy

C = Classification
# how good a conclusive classification is; INCONCLUSIVE is not on this scale
RANK = {C.FAIL: 0, C.WARN: 1, C.PASS: 2}

COLUMNS = [f.name for f in fields(RequestRecord)]
LOWER_DISTRIBUTIONS = [*DISTRIBUTION_METRICS, "gpu.utilization"]


def blank_metrics(**samples: list[float]) -> RunMetrics:
    """Metrics of a run with 100 requests and only the given samples."""
    return RunMetrics(
        samples=MappingProxyType({k: np.asarray(v, dtype=np.float64) for k, v in samples.items()}),
        scalars=MappingProxyType(dict.fromkeys(("error_rate", "request_rate"), 0.0)),
        attempted=100,
        failed=0,
        succeeded=100,
        good=100,
        error_classes=MappingProxyType({}),
        duration_s=10.0,
    )


def stricter(obj: Objective, shrink: float) -> Objective:
    """The objective with its target moved to the good side (a band narrowed), alert kept."""
    target = obj.target
    if isinstance(target, Band):
        cut = (target.max - target.min) * shrink / 2
        new: float | Band = Band(min=target.min + cut, max=target.max - cut)
    elif obj.definition.better == "lower":
        new = target * (1 - shrink)
    else:
        new = target + 10 * shrink
    return obj.model_copy(update={"target": new})


@settings(max_examples=300, deadline=None)
@given(obj=objectives(), m=run_metrics(), shrink=st.floats(0.0, 1.0))
def test_a_stricter_target_never_improves_the_classification(
    obj: Objective, m: RunMetrics, shrink: float
) -> None:
    before = judge_objective(obj, m).verdict
    after = judge_objective(stricter(obj, shrink), m).verdict
    if after is C.PASS:
        assert before is C.PASS  # a stricter target never turns anything into a PASS
    if before is C.FAIL:
        assert after is C.FAIL  # FAIL depends on the alert alone
    if C.INCONCLUSIVE not in (before, after):
        assert RANK[after] <= RANK[before]


@settings(max_examples=200, deadline=None)
@given(
    metric=st.sampled_from(LOWER_DISTRIBUTIONS),
    stat=st.sampled_from(["mean", "max"]),
    data=st.data(),
)
def test_adding_samples_that_meet_a_mean_or_max_objective_keeps_it_passing(
    metric: str, stat: str, data: st.DataObject
) -> None:
    obj = data.draw(objectives(metric=metric)).model_copy(update={"stat": stat, "min_samples": 1})
    target = obj.target
    # values that meet the objective, kept off its edges so float rounding cannot matter
    if isinstance(target, Band):
        low, high = target.min, target.max
        assume(high - low > 1e-6 * high)  # a zero-width band has no inside to stay off the edges
        meets = st.integers(1, 999).map(lambda k: low + (high - low) * k / 1000)
    else:
        bound = target
        meets = st.integers(0, 999).map(lambda k: bound * k / 1000)
    base = data.draw(st.lists(meets, min_size=1, max_size=40))
    extra = data.draw(st.lists(meets, min_size=1, max_size=40))
    before = judge_objective(obj, blank_metrics(**{metric: base})).verdict
    after = judge_objective(obj, blank_metrics(**{metric: base + extra})).verdict
    if before is C.PASS:
        # More passing samples can widen a mean's bounds (undecided), never make it FAIL.
        assert after is not C.FAIL


@settings(max_examples=200, deadline=None)
@given(
    metric=st.sampled_from(DISTRIBUTION_METRICS),
    q=st.sampled_from(["p50", "p90", "p99", "p99.9"]),
    data=st.data(),
)
def test_adding_samples_below_all_others_never_turns_a_percentile_pass_into_fail(
    metric: str, q: str, data: st.DataObject
) -> None:
    target = data.draw(st.floats(0.01, 10.0))
    alert = target + data.draw(st.floats(0.0, 5.0))
    obj = Objective(name="o", metric=metric, stat=q, target=target, alert=alert)
    base = np.array(data.draw(st.lists(st.floats(0.0, 20.0), min_size=1, max_size=50)))
    extra = data.draw(st.lists(st.floats(0.0, float(base.min())), min_size=1, max_size=50))
    before = judge_objective(obj, blank_metrics(**{metric: list(base)}))
    after = judge_objective(obj, blank_metrics(**{metric: [*base, *extra]}))
    assert before.estimate is not None
    assert after.estimate is not None
    assert after.estimate <= before.estimate + 1e-12 * max(1.0, before.estimate)
    if before.verdict is C.PASS:
        # The estimate cannot rise; with more samples the bounds may re-centre, so a PASS
        # can become undecided, never a FAIL (the lower bound only falls).
        assert after.verdict is not C.FAIL


def test_linear_percentiles_can_rise_when_passing_samples_are_added() -> None:
    """Why the property above adds samples below all others, not just below the target.

    With linear interpolation, p90 of {0, 100} is 90, under a 95 target; adding 94, which
    meets the target too, moves p90 to 98.8, beyond an alert of 97.
    """
    obj = Objective(name="o", metric="e2el", stat="p90", target=95.0, alert=97.0)

    def as_point(values: list[float]) -> tuple[float | None, C]:
        est = replace(estimate(obj, blank_metrics(e2el=values)), interval=None)
        return est.value, classify(obj, est)[0]

    assert as_point([0.0, 100.0])[1] is C.PASS
    value, verdict = as_point([0.0, 100.0, 94.0])
    assert value == pytest.approx(98.8)
    assert verdict is C.FAIL


@settings(max_examples=60, deadline=None)
@given(records=record_lists(max_size=25), policy=policies(), data=st.data())
def test_the_verdict_does_not_depend_on_record_order(
    records: list[RequestRecord], policy: Policy, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(records))

    def verdict_of(rs: list[RequestRecord]) -> tuple[Decision, list[ObjectiveResult]]:
        frame = pd.DataFrame([r.to_row() for r in rs], columns=COLUMNS)
        v = evaluate(policy, analyse(frame, 0.0, 30.0, policy.goodput))
        return v.decision, list(v.objectives)

    decision, results = verdict_of(records)
    decision_shuffled, results_shuffled = verdict_of(shuffled)
    assert decision is decision_shuffled
    for a, b in zip(results, results_shuffled, strict=True):
        assert (a.verdict, a.n) == (b.verdict, b.n)
        if a.estimate is None or b.estimate is None:
            assert a.estimate is b.estimate
        else:  # a mean may differ in the last bit with summation order
            assert math.isclose(a.estimate, b.estimate, rel_tol=1e-12, abs_tol=1e-15)


def test_the_order_property_would_see_a_difference() -> None:
    """The comparison above is not vacuous: different runs give different estimates."""
    obj = Objective(name="o", metric="e2el", stat="mean", target=1.0)
    a = judge_objective(obj, blank_metrics(e2el=[0.5, 0.7]))
    b = judge_objective(obj, blank_metrics(e2el=[0.5, 0.8]))
    assert a.estimate != b.estimate


@settings(max_examples=200, deadline=None)
@given(policy=policies(), m=run_metrics())
def test_no_data_is_never_pass(policy: Policy, m: RunMetrics) -> None:
    empty = replace(
        m,
        samples=MappingProxyType({k: v[:0] for k, v in m.samples.items()}),
        scalars=MappingProxyType(dict.fromkeys(m.scalars)),
        histograms=MappingProxyType({}),
        attempted=0,
        failed=0,
        succeeded=0,
        good=0,
    )
    verdict = evaluate(policy, empty)
    assert all(o.verdict is C.INCONCLUSIVE for o in verdict.objectives)
    assert verdict.decision is Decision.INCONCLUSIVE


@settings(max_examples=100, deadline=None)
@given(records=record_lists(max_size=20), policy=policies())
def test_runs_without_measured_requests_never_pass(
    records: list[RequestRecord], policy: Policy
) -> None:
    unmeasured = [replace(r, phase="warmup") for r in records]
    frame = pd.DataFrame([r.to_row() for r in unmeasured], columns=COLUMNS)
    metrics = analyse(frame, 0.0, 30.0, policy.goodput)
    decision = evaluate(policy, metrics).decision
    assert decision not in (Decision.PASS, Decision.WARN)


_results = st.builds(
    ObjectiveResult,
    name=st.just("o"),
    metric=st.just("ttft"),
    stat=st.just("p50"),
    estimate=st.none(),
    unit=st.just("s"),
    interval=st.none(),
    n=st.just(0),
    verdict=st.sampled_from(list(C)),
    reason=st.just(""),
    critical=st.booleans(),
    target=st.just(1.0),
    alert=st.none(),
)


@settings(max_examples=300, deadline=None)
@given(results=st.lists(_results, max_size=8), invalid=st.none() | st.just("saturated"))
def test_the_decision_follows_from_the_classifications(
    results: list[ObjectiveResult], invalid: str | None
) -> None:
    decision = decide(results, invalid)
    critical = [r.verdict for r in results if r.critical]
    advisory = [r.verdict for r in results if not r.critical]
    conclusive = [v for v in critical + advisory if v is not C.INCONCLUSIVE]
    if invalid is not None:
        assert decision is Decision.INVALID
    elif C.FAIL in critical:
        assert decision is Decision.FAIL
    elif C.INCONCLUSIVE in critical or not conclusive:
        assert decision is Decision.INCONCLUSIVE
    elif C.WARN in conclusive or C.FAIL in advisory:
        assert decision is Decision.WARN
    else:
        assert decision is Decision.PASS
        assert all(v in (C.PASS, C.INCONCLUSIVE) for v in critical + advisory)
    # a critical objective can always veto, an advisory one never can
    if invalid is None and C.FAIL in critical:
        assert decide([*results, _pass()]) is Decision.FAIL


def _pass() -> ObjectiveResult:
    return ObjectiveResult("p", "ttft", "p50", 0.1, "s", None, 1, C.PASS, "", True, 1.0, None)


@pytest.mark.parametrize("critical", [True, False])
def test_advisory_failures_never_fail_the_run(critical: bool) -> None:
    failing = replace(_pass(), verdict=C.FAIL, critical=critical)
    expected = Decision.FAIL if critical else Decision.WARN
    assert decide([_pass(), failing]) is expected
