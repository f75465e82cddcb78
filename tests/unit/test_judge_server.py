"""The judge on server-side data: histogram buckets as intervals, reasons for missing data,
and client-versus-server checks turning a PASS into a WARN."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest
from test_judge import metrics, objective

from harness.collectors.window import HistogramWindow
from harness.judge.analysis import RunMetrics
from harness.judge.classify import evaluate, judge_objective
from harness.judge.verdict import CheckResult, Classification, Decision
from harness.spec.policy import Objective, Policy

C = Classification


def judged(obj: Objective, m: RunMetrics) -> tuple[Classification, str]:
    result = judge_objective(obj, m)
    return result.verdict, result.reason


# vLLM's TTFT buckets up to 1 s; 100 observations: 50 in (0.1, 0.25], 45 in (0.25, 0.5],
# 5 in (0.5, 0.75].
BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0)
CUMULATIVE = (0, 0, 0, 0, 0, 0, 0, 0, 50, 95, 100, 100)
TTFT = HistogramWindow(BOUNDS, tuple(float(c) for c in CUMULATIVE), 100.0, 25.0)


def server_metrics() -> object:
    return replace(metrics(), histograms=MappingProxyType({"server.ttft": TTFT}))


@pytest.mark.parametrize(
    ("target", "alert", "expected", "fragment"),
    [
        ("750ms", None, C.PASS, "bucket 500 ms–750 ms"),  # p99 certainly below 750 ms
        ("500ms", "1s", C.WARN, "within alert"),  # certainly in (500, 750]: above target
        ("250ms", "500ms", C.FAIL, "> alert 500 ms"),  # certainly above the alert
        ("600ms", None, C.INCONCLUSIVE, "cannot decide"),  # 600 ms cuts the bucket
    ],
)
def test_a_server_percentile_is_judged_on_its_bucket(
    target: str, alert: str | None, expected: Classification, fragment: str
) -> None:
    spec = {"metric": "server.ttft", "stat": "p99", "target": target}
    if alert:
        spec["alert"] = alert
    verdict, reason = judged(objective(**spec), server_metrics())  # type: ignore[arg-type]
    assert verdict is expected, reason
    assert fragment in reason


def test_the_server_mean_is_exact() -> None:
    obj = objective(metric="server.ttft", stat="mean", target="300ms")
    verdict, reason = judged(obj, server_metrics())  # type: ignore[arg-type]
    assert verdict is C.PASS
    assert "250 ms" in reason


def test_missing_server_data_says_why() -> None:
    m = replace(
        metrics(), missing=MappingProxyType({"server.ttft": "Prometheus at X is unreachable"})
    )
    verdict, reason = judged(objective(metric="server.ttft", stat="p99", target="1s"), m)
    assert verdict is C.INCONCLUSIVE
    assert "unreachable" in reason
    gpu = objective(metric="gpu.utilization", stat="mean", target={"min": 0.6, "max": 0.8})
    verdict, reason = judged(gpu, metrics())
    assert verdict is C.INCONCLUSIVE
    assert reason == "no gpu.utilization data: not collected in this run"


def test_a_disagreeing_check_turns_pass_into_warn_but_never_fail_into_pass() -> None:
    policy = Policy.model_validate(
        {
            "name": "p",
            "objectives": [{"name": "e", "metric": "error_rate", "stat": "value", "target": "1%"}],
        }
    )
    bad = [CheckResult("output tokens vs server", False, "client 10 vs 20")]
    plenty = metrics(attempted=10_000)  # 0 errors in 10 000: below 1 % at 95 %
    assert evaluate(policy, plenty).decision is Decision.PASS
    assert evaluate(policy, plenty, checks=bad).decision is Decision.WARN
    failing = metrics(failed=50)
    assert evaluate(policy, failing, checks=bad).decision is Decision.FAIL
    unknown = [CheckResult("ttft vs server.ttft", None, "no data on one side")]
    assert evaluate(policy, plenty, checks=unknown).decision is Decision.PASS
