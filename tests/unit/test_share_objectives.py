"""Objectives on the share of requests under a bound ("99 % of requests within 2 s")."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest
from test_judge import metrics

from harness.collectors.window import HistogramWindow
from harness.errors import ConfigError
from harness.judge.classify import judge_objective
from harness.judge.verdict import Classification as C
from harness.report.alertrules import rules_for, skipped_objectives
from harness.spec.config import validate
from harness.spec.policy import Objective, Policy

WITHIN_2S = Objective.model_validate(
    {"name": "fast", "metric": "e2el", "stat": "share_under", "bound": "2s",
     "target": "99%", "alert": "95%"}
)  # fmt: skip


def test_share_is_judged_on_clopper_pearson_bounds() -> None:
    fast = judge_objective(WITHIN_2S, metrics(e2el=[0.5] * 5000))
    assert fast.verdict is C.PASS
    assert fast.unit == "ratio"
    assert fast.reason.startswith("share of e2el ≤ 2 s 100 % > target 99 %")
    slow = judge_objective(WITHIN_2S, metrics(e2el=[0.5] * 4000 + [3.0] * 1000))
    assert slow.verdict is C.FAIL  # 80 %, far under the 95 % alert
    few = judge_objective(WITHIN_2S, metrics(e2el=[0.5] * 100))
    assert few.verdict is C.INCONCLUSIVE
    assert "requests would decide" in few.reason


def test_a_server_share_is_exact_on_a_bucket_bound() -> None:
    hist = HistogramWindow((0.5, 1.0, 2.0, 5.0), (900.0, 990.0, 998.0, 1000.0), 1000.0, 400.0)
    m = replace(metrics(), histograms=MappingProxyType({"server.e2el": hist}))
    obj = Objective.model_validate(
        {"name": "s", "metric": "server.e2el", "stat": "share_under", "bound": "2s",
         "target": "99%"}
    )  # fmt: skip
    result = judge_objective(obj, m)
    assert result.estimate == pytest.approx(0.998)
    assert result.interval == (0.998, 0.998)
    assert result.verdict is C.PASS


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"stat": "share_under", "target": "99%"}, "bound"),
        ({"stat": "p99", "bound": "2s", "target": "2s"}, "bound"),
        ({"stat": "share_under", "bound": "2s", "target": "95%", "alert": "99%"}, "alert"),
    ],
)
def test_share_objectives_are_checked(spec: dict[str, str], message: str) -> None:
    data = {"name": "p", "objectives": [{"name": "o", "metric": "e2el", **spec}]}
    with pytest.raises(ConfigError, match=message):
        validate(Policy, data, "p.yaml")


def test_a_share_on_a_bucket_bound_becomes_an_alert_rule() -> None:
    odd = WITHIN_2S.model_copy(update={"name": "odd", "bound": 0.6})
    policy = Policy.model_validate(
        {"name": "p", "objectives": [WITHIN_2S.model_dump(), odd.model_dump()]}
    )
    (rule,) = rules_for(policy)["groups"][0]["rules"]
    assert rule["expr"] == (
        'sum(rate(vllm:e2e_request_latency_seconds_bucket{le="2.0"}[5m])) / '
        "sum(rate(vllm:e2e_request_latency_seconds_count[5m])) < 0.95"
    )
    assert "share of e2el ≤ 2 s below 95 %" in rule["annotations"]["summary"]
    (skipped,) = skipped_objectives(policy)
    assert skipped.objective == "odd"
    assert "not one of vllm:e2e_request_latency_seconds's bucket bounds" in skipped.reason
