"""The judge on hand-built metrics: classifications, reasons, decision and exit code."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest

from harness.errors import ExitCode
from harness.judge.analysis import RunMetrics
from harness.judge.classify import classify, decide, estimate, evaluate, exit_code, judge_objective
from harness.judge.verdict import Classification, Decision, ObjectiveResult
from harness.spec.policy import Objective, Policy

C = Classification


def gpu_metrics(utilization: list[float]) -> RunMetrics:
    """Metrics with GPU utilization samples (a dotted name cannot be a keyword)."""
    base = metrics()
    samples = {**base.samples, "gpu.utilization": np.asarray(utilization, dtype=np.float64)}
    return replace(base, samples=MappingProxyType(samples))


def metrics(
    attempted: int = 100,
    failed: int = 0,
    scalars: dict[str, float | None] | None = None,
    **samples: list[float],
) -> RunMetrics:
    base_scalars: dict[str, float | None] = {
        "error_rate": failed / attempted if attempted else None,
        "request_rate": 10.0 if attempted else None,
        "output_token_rate": 500.0 if attempted else None,
        "goodput": 9.0 if attempted else None,
    }
    base_scalars.update(scalars or {})
    return RunMetrics(
        samples=MappingProxyType({k: np.asarray(v, dtype=np.float64) for k, v in samples.items()}),
        scalars=MappingProxyType(base_scalars),
        attempted=attempted,
        failed=failed,
        succeeded=attempted - failed,
        good=attempted - failed,
        error_classes=MappingProxyType({"timeout": failed} if failed else {}),
        duration_s=10.0,
    )


def objective(**spec: Any) -> Objective:
    spec.setdefault("name", f"{spec.get('stat', 'value')} {spec['metric']}")
    return Objective.model_validate(spec)


def judged(obj: Objective, m: RunMetrics) -> tuple[Classification, str]:
    """The estimate classified as a point: how values compare with target and alert.
    (Deciding on intervals is tested in test_judge_intervals.py.)"""
    return classify(obj, replace(estimate(obj, m), interval=None))


P50 = objective(metric="e2el", stat="p50", target="500ms", alert="1s")
P99 = objective(metric="e2el", stat="p99", target="2s", alert="5s")


@pytest.mark.parametrize(
    ("latencies", "expected"),
    [
        ([0.1, 0.2, 0.3], C.PASS),
        ([0.5, 0.5, 0.5], C.WARN),  # equal to the target is not "< 500ms"
        ([0.4, 0.8, 0.9], C.WARN),
        ([1.0, 1.0, 1.0], C.WARN),  # at the alert threshold, not beyond it
        ([1.2, 1.5, 0.1], C.FAIL),
    ],
)
def test_lower_is_better_against_target_and_alert(
    latencies: list[float], expected: Classification
) -> None:
    assert judged(P50, metrics(e2el=latencies))[0] is expected


def test_reason_states_the_numbers_with_units() -> None:
    verdict, reason = judged(P99, metrics(e2el=[1.83] * 10))
    assert verdict is C.PASS
    assert reason == "p99 e2el 1.83 s < target 2 s"
    assert judged(P99, metrics(e2el=[6.0] * 10)) == (
        C.FAIL,
        "p99 e2el 6 s > alert 5 s (target 2 s)",
    )
    assert judged(P99, metrics(e2el=[3.0] * 10)) == (
        C.WARN,
        "p99 e2el 3 s ≥ target 2 s, within alert 5 s",
    )


def test_without_an_alert_anything_but_pass_is_fail() -> None:
    obj = objective(metric="ttft", stat="max", target="200ms")
    assert judged(obj, metrics(ttft=[0.1, 0.199]))[0] is C.PASS
    assert judged(obj, metrics(ttft=[0.1, 0.2])) == (C.FAIL, "max ttft 200 ms ≥ target 200 ms")


def test_error_rate_from_the_runbook() -> None:
    obj = objective(metric="error_rate", stat="value", target="0.1%", alert="1%")
    assert judged(obj, metrics(attempted=10_000, failed=5)) == (
        C.PASS,
        "error_rate 0.05 % < target 0.1 %",
    )
    assert judged(obj, metrics(attempted=1000, failed=5))[0] is C.WARN
    assert judged(obj, metrics(attempted=1000, failed=11))[0] is C.FAIL
    assert judge_objective(obj, metrics(attempted=1000, failed=11)).n == 1000


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(12.0, C.PASS), (10.0, C.WARN), (6.0, C.WARN), (5.0, C.WARN), (4.9, C.FAIL)],
)
def test_higher_is_better_mirrors(rate: float, expected: Classification) -> None:
    obj = objective(metric="request_rate", stat="value", target=10, alert=5)
    assert judged(obj, metrics(scalars={"request_rate": rate}))[0] is expected


def test_higher_is_better_reasons() -> None:
    obj = objective(metric="goodput", stat="value", target="10/s", alert="5/s")
    assert judged(obj, metrics(scalars={"goodput": 12.0}))[1] == "goodput 12/s > target 10/s"
    assert judged(obj, metrics(scalars={"goodput": 4.0}))[1] == (
        "goodput 4/s < alert 5/s (target 10/s)"
    )
    assert judged(obj, metrics(scalars={"goodput": 7.0}))[1] == (
        "goodput 7/s ≤ target 10/s, within alert 5/s"
    )
    no_alert = objective(metric="goodput", stat="value", target="10/s")
    assert judged(no_alert, metrics(scalars={"goodput": 7.0}))[0] is C.FAIL


GPU = objective(
    metric="gpu.utilization", stat="mean", target={"min": "60%", "max": "80%"}, alert="95%"
)


@pytest.mark.parametrize(
    ("utilization", "expected", "reason"),
    [
        (0.6, C.PASS, "mean gpu.utilization 60 % within target 60 %–80 %"),
        (0.8, C.PASS, "mean gpu.utilization 80 % within target 60 %–80 %"),
        (0.5, C.WARN, "mean gpu.utilization 50 % below target 60 %–80 %"),
        (0.9, C.WARN, "mean gpu.utilization 90 % above target 60 %–80 %, within alert 95 %"),
        (0.97, C.FAIL, "mean gpu.utilization 97 % > alert 95 % (target 60 %–80 %)"),
    ],
)
def test_band_target(utilization: float, expected: Classification, reason: str) -> None:
    assert judged(GPU, gpu_metrics([utilization] * 4)) == (expected, reason)


def test_band_without_alert_fails_only_in_the_bad_direction() -> None:
    obj = objective(metric="gpu.utilization", stat="mean", target={"min": 0.6, "max": 0.8})
    assert judged(obj, gpu_metrics([0.9]))[0] is C.FAIL
    assert judged(obj, gpu_metrics([0.3]))[0] is C.WARN
    higher = objective(metric="request_rate", stat="value", target={"min": 5, "max": 10})
    assert judged(higher, metrics(scalars={"request_rate": 4.0}))[0] is C.FAIL
    assert judged(higher, metrics(scalars={"request_rate": 11.0}))[0] is C.WARN


def test_no_data_is_inconclusive_and_says_what_is_missing() -> None:
    verdict, reason = judged(GPU, metrics())
    assert verdict is C.INCONCLUSIVE
    assert reason == "no gpu.utilization data: not collected in this run"

    tpot = objective(metric="tpot", stat="p99", target="50ms")
    verdict, reason = judged(tpot, metrics(tpot=[]))
    assert verdict is C.INCONCLUSIVE
    assert "more than one output token" in reason

    err = objective(metric="error_rate", stat="value", target="1%")
    result = judge_objective(err, metrics(attempted=0))
    assert (result.verdict, result.estimate, result.n) == (C.INCONCLUSIVE, None, 0)
    assert result.reason == "no error_rate: no requests attempted in the measured window"


def test_too_few_samples_is_inconclusive() -> None:
    obj = objective(metric="ttft", stat="p50", target="1s", min_samples=100)
    result = judge_objective(obj, metrics(ttft=[0.1] * 99))
    assert result.verdict is C.INCONCLUSIVE
    assert result.reason == "only 99 ttft samples, fewer than the 100 required"
    assert result.estimate == pytest.approx(0.1)  # still reported
    assert judge_objective(obj, metrics(ttft=[0.1] * 100)).verdict is C.PASS
    scalar = objective(metric="error_rate", stat="value", target="1%", min_samples=500)
    assert judged(scalar, metrics(attempted=20))[1] == (
        "only 20 requests attempted, fewer than the 500 required"
    )


def test_estimate_uses_the_linear_percentile() -> None:
    obj = objective(metric="itl", stat="p90", target="1s")
    est = estimate(obj, metrics(itl=[0.0, 0.1, 0.2, 0.3, 1.3]))
    assert est.value == pytest.approx(0.3 + 0.6 * 1.0)
    assert est.n == 5
    assert est.interval is not None
    assert est.value is not None
    assert est.interval[0] <= est.value <= est.interval[1]


def test_classify_treats_a_nan_estimate_as_no_data() -> None:
    from harness.judge.classify import Estimate

    assert classify(P50, Estimate(float("nan"), 10))[0] is C.INCONCLUSIVE


def result(verdict: Classification, critical: bool = True) -> ObjectiveResult:
    return ObjectiveResult(
        name="x",
        metric="ttft",
        stat="p50",
        estimate=None,
        unit="s",
        interval=None,
        n=0,
        verdict=verdict,
        reason="",
        critical=critical,
        target=1.0,
        alert=None,
    )


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([result(C.PASS), result(C.PASS, critical=False)], Decision.PASS),
        ([result(C.PASS), result(C.WARN)], Decision.WARN),
        ([result(C.PASS), result(C.FAIL, critical=False)], Decision.WARN),
        ([result(C.PASS), result(C.INCONCLUSIVE, critical=False)], Decision.PASS),
        ([result(C.WARN), result(C.INCONCLUSIVE)], Decision.INCONCLUSIVE),
        ([result(C.FAIL), result(C.INCONCLUSIVE)], Decision.FAIL),
        ([result(C.FAIL, critical=False), result(C.INCONCLUSIVE)], Decision.INCONCLUSIVE),
        ([result(C.INCONCLUSIVE, critical=False)], Decision.INCONCLUSIVE),
        ([], Decision.INCONCLUSIVE),
    ],
)
def test_decision(results: list[ObjectiveResult], expected: Decision) -> None:
    assert decide(results) is expected
    assert decide(results, invalid_reason="load generator saturated") is Decision.INVALID


def test_exit_codes() -> None:
    assert [exit_code(d) for d in Decision] == [
        ExitCode.PASS,
        ExitCode.PASS,
        ExitCode.FAIL,
        ExitCode.INCONCLUSIVE,
        ExitCode.INVALID,
    ]
    assert [int(exit_code(d)) for d in Decision] == [0, 0, 1, 3, 4]


RUNBOOK = Policy.model_validate(
    {
        "name": "runbook",
        "objectives": [
            {"name": "P50 latency", "metric": "e2el", "stat": "p50",
             "target": "500ms", "alert": "1s"},
            {"name": "P99 latency", "metric": "e2el", "stat": "p99",
             "target": "2s", "alert": "5s"},
            {"name": "Error rate", "metric": "error_rate", "stat": "value",
             "target": "0.1%", "alert": "1%"},
            {
                "name": "GPU utilization",
                "metric": "gpu.utilization",
                "stat": "mean",
                "target": {"min": "60%", "max": "80%"},
                "alert": "95%",
                "critical": False,
            },
        ],
    }
)  # fmt: skip


def test_evaluate_the_runbook_policy() -> None:
    # 1 error in 10 000: below 0.1 % at 95 % (the Clopper-Pearson bound is 0.047 %).
    m = metrics(attempted=10_000, failed=1, e2el=[0.3] * 1900 + [1.5] * 100, ttft=[0.1])
    verdict = evaluate(RUNBOOK, m)
    assert [o.verdict for o in verdict.objectives] == [C.PASS, C.PASS, C.PASS, C.INCONCLUSIVE]
    assert verdict.decision is Decision.PASS  # GPU data is advisory
    assert verdict.policy == "runbook"
    assert verdict.summary.requests == 10_000
    assert verdict.summary.e2el_s.n == 2000
    assert verdict.summary.ttft_s.p50 == pytest.approx(0.1)
    assert verdict.objectives[1].target == 2.0
    assert verdict.objectives[3].target == (0.6, 0.8)

    slow = metrics(attempted=10_000, failed=1, e2el=[0.3] * 1900 + [6.0] * 100)
    assert evaluate(RUNBOOK, slow).decision is Decision.FAIL


def test_evaluate_an_invalid_run_still_judges_the_objectives() -> None:
    verdict = evaluate(RUNBOOK, metrics(e2el=[0.1] * 100), invalid_reason="target unreachable")
    assert verdict.decision is Decision.INVALID
    assert verdict.invalid_reason == "target unreachable"
    assert verdict.objectives[0].verdict is C.PASS


def test_evaluate_without_requests_never_passes() -> None:
    verdict = evaluate(RUNBOOK, metrics(attempted=0))
    assert verdict.decision is Decision.INCONCLUSIVE
    assert exit_code(verdict.decision) is ExitCode.INCONCLUSIVE
