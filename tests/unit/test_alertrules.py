"""Alert rules from a policy: names, PromQL, thresholds, severities and what is left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import UsageError
from harness.report.alertrules import (
    Skipped,
    parse_selector,
    render_rules,
    rules_for,
    skipped_objectives,
)
from harness.spec.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parents[2]
E2E = "vllm:e2e_request_latency_seconds"
HANDLER = 'handler=~"/v1/(chat/)?completions"'


def policy(*objectives: dict[str, Any]) -> Policy:
    return Policy.model_validate({"name": "p", "objectives": list(objectives)})


def rules(p: Policy, **kw: Any) -> dict[str, dict[str, Any]]:
    """The generated rules by alert name."""
    doc = rules_for(p, **kw)
    assert [g["name"] for g in doc["groups"]] == [p.name]
    return {r["alert"]: r for r in doc["groups"][0]["rules"]}


def test_runbook_policy_gives_the_runbook_alerts() -> None:
    got = rules(load_policy(ROOT / "slo/runbook.yaml"))
    assert list(got) == [
        "SloP50LatencyBreached",
        "ModelServingHighLatency",
        "ModelServingHighErrorRate",
        "GPUUtilizationHigh",
    ]
    assert {name: r["expr"] for name, r in got.items()} == {
        "SloP50LatencyBreached": (
            f"histogram_quantile(0.5, sum by (le) (rate({E2E}_bucket[5m]))) > 1"
        ),
        "ModelServingHighLatency": (
            f"histogram_quantile(0.99, sum by (le) (rate({E2E}_bucket[5m]))) > 5"
        ),
        "ModelServingHighErrorRate": (
            f'sum(rate(http_requests_total{{{HANDLER},status!~"2.."}}[5m]))'
            f" / sum(rate(http_requests_total{{{HANDLER}}}[5m])) > 0.01"
        ),
        "GPUUtilizationHigh": "avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL[5m])) / 100 > 0.95",
    }
    assert {n: r["labels"]["severity"] for n, r in got.items()} == {
        "SloP50LatencyBreached": "critical",
        "ModelServingHighLatency": "critical",
        "ModelServingHighErrorRate": "critical",
        "GPUUtilizationHigh": "warning",  # advisory in the policy
    }
    assert all(r["for"] == "5m" for r in got.values())
    latency = got["ModelServingHighLatency"]["annotations"]
    assert latency["summary"] == "p99-latency: e2el p99 above 5 s (SLO policy runbook)"
    assert "objective p99-latency (critical)" in latency["description"]
    assert "target 2 s" in latency["description"]
    assert latency["description"].endswith("Runbook alert: ModelServingHighLatency.")
    gpu = got["GPUUtilizationHigh"]["annotations"]["description"]
    assert "above the alert threshold 95 %" in gpu
    assert "target 60 % to 80 %" in gpu
    assert skipped_objectives(load_policy(ROOT / "slo/runbook.yaml")) == []


def test_serving_health_maps_engine_gateway_and_skips_rows_without_alert() -> None:
    p = load_policy(ROOT / "slo/serving-health.yaml")
    got = rules(p)
    assert list(got)[4:] == [
        "SloEngineTtftBreached",
        "SloKvCacheBreached",
        "SloGatewayOverheadBreached",
        "SloGatewayErrorsBreached",
    ]
    assert got["SloEngineTtftBreached"]["expr"] == (
        "histogram_quantile(0.99, sum by (le) "
        "(rate(vllm:time_to_first_token_seconds_bucket[5m]))) > 2.5"
    )
    assert got["SloKvCacheBreached"]["expr"] == (
        "max(max_over_time(vllm:kv_cache_usage_perc[5m])) > 0.99"
    )
    assert got["SloGatewayErrorsBreached"]["expr"] == (
        'sum(rate(litellm_proxy_total_requests_metric_total{status_code!~"2.."}[5m]))'
        " / sum(rate(litellm_proxy_total_requests_metric_total[5m])) > 0.01"
    )
    assert all(got[n]["labels"]["severity"] == "warning" for n in list(got)[4:])
    skipped = skipped_objectives(p)
    assert [s.objective for s in skipped] == ["engine-queue", "preemptions"]
    assert all("no alert threshold" in s.reason for s in skipped)
    text = render_rules(rules_for(p), skipped)
    assert "# Not expressible as a server alert:\n#   engine-queue: no alert threshold" in text


def test_selector_is_quoted_and_dropped_where_the_series_lacks_the_label() -> None:
    p = load_policy(ROOT / "slo/runbook.yaml")
    sel = {"model_name": 'mis"tral\\7b', "namespace": "=~prod-.*"}
    got = rules(p, selector=sel, window="10m", for_="2m")
    latency = got["ModelServingHighLatency"]["expr"]
    assert f'{E2E}_bucket{{model_name="mis\\"tral\\\\7b",namespace=~"prod-.*"}}[10m]' in latency
    # http_requests_total and DCGM series carry no model_name: matching on it never fires.
    errors = got["ModelServingHighErrorRate"]["expr"]
    assert "model_name" not in errors
    assert f'http_requests_total{{namespace=~"prod-.*",{HANDLER},status!~"2.."}}[10m]' in errors
    assert got["GPUUtilizationHigh"]["expr"].startswith(
        'avg(avg_over_time(DCGM_FI_DEV_GPU_UTIL{namespace=~"prod-.*"}[10m]))'
    )
    assert {r["for"] for r in got.values()} == {"2m"}


def test_higher_is_better_metric_alerts_below_and_band_alerts_on_its_bad_side() -> None:
    p = policy(
        {"name": "sm clock", "metric": "gpu.sm_clock", "stat": "min",
         "target": "1400MHz", "alert": "1000MHz", "critical": False},
        {"name": "gpu band", "metric": "gpu.utilization", "stat": "max",
         "target": {"min": "50%", "max": "90%"}, "alert": "99%"},
    )  # fmt: skip
    got = rules(p)
    assert got["SloSmClockBreached"]["expr"] == (
        "min(min_over_time(DCGM_FI_DEV_SM_CLOCK[5m])) * 1000000 < 1000000000"
    )
    assert (
        "below the alert threshold 1000 MHz"
        in got["SloSmClockBreached"]["annotations"]["description"]
    )
    # The band's low side has no alert tier: one rule, on the high side only.
    assert got["GPUUtilizationHigh"]["expr"] == (
        "max(max_over_time(DCGM_FI_DEV_GPU_UTIL[5m])) / 100 > 0.99"
    )
    assert got["GPUUtilizationHigh"]["labels"]["severity"] == "critical"


def test_mean_percentiles_and_summed_gauges() -> None:
    p = policy(
        {"name": "ttft mean", "metric": "ttft", "stat": "mean", "target": "1s", "alert": "2s"},
        {"name": "itl", "metric": "server.itl", "stat": "p99.9", "target": "50ms", "alert": "0.2s"},
        {"name": "queue", "metric": "server.queue_waiting", "stat": "max", "target": 1, "alert": 8},
        {"name": "queue p90", "metric": "server.queue_waiting", "stat": "p90", "target": 1,
         "alert": 4},
    )  # fmt: skip
    got = rules(p)
    name = "vllm:time_to_first_token_seconds"
    assert got["SloTtftMeanBreached"]["expr"] == (
        f"sum(rate({name}_sum[5m])) / sum(rate({name}_count[5m])) > 2"
    )
    assert got["SloItlBreached"]["expr"] == (
        "histogram_quantile(0.999, sum by (le) "
        "(rate(vllm:inter_token_latency_seconds_bucket[5m]))) > 0.2"
    )
    # Engines are summed first, as the judge does, then the stat is taken over time.
    assert got["SloQueueBreached"]["expr"] == (
        "max_over_time(sum(vllm:num_requests_waiting)[5m:]) > 8"
    )
    assert got["SloQueueP90Breached"]["expr"] == (
        "quantile_over_time(0.9, sum(vllm:num_requests_waiting)[5m:]) > 4"
    )


def test_runbook_latency_name_goes_to_the_p99_else_the_highest_percentile() -> None:
    both = policy(
        {"name": "tail", "metric": "e2el", "stat": "p99.9", "target": "3s", "alert": "9s"},
        {"name": "p99", "metric": "server.e2el", "stat": "p99", "target": "2s", "alert": "5s"},
    )
    assert rules(both)["ModelServingHighLatency"]["annotations"]["summary"].startswith("p99:")
    only = policy(
        {"name": "p90", "metric": "e2el", "stat": "p90", "target": "1s", "alert": "3s"},
        {"name": "p95", "metric": "e2el", "stat": "p95", "target": "2s", "alert": "4s"},
    )
    assert list(rules(only)) == ["SloP90Breached", "ModelServingHighLatency"]


def test_names_stay_unique() -> None:
    p = policy(
        {"name": "ttft p99", "metric": "ttft", "stat": "p99", "target": "1s", "alert": "2s"},
        {"name": "ttft-p99", "metric": "server.ttft", "stat": "p99", "target": "1s", "alert": "3s"},
        {"name": "errors", "metric": "error_rate", "stat": "value", "target": "1%", "alert": "2%"},
        {"name": "engine errors", "metric": "server.error_rate", "stat": "value",
         "target": "1%", "alert": "5%"},
    )  # fmt: skip
    assert list(rules(p)) == [
        "SloTtftP99Breached",
        "SloTtftP99Breached2",
        "ModelServingHighErrorRate",
        "SloEngineErrorsBreached",
    ]


def test_client_only_throughput_and_run_totals_are_skipped_with_reasons() -> None:
    p = policy(
        {"name": "lag", "metric": "schedule_lag", "stat": "p99", "target": "5ms", "alert": "50ms"},
        {"name": "goodput", "metric": "goodput", "stat": "value", "target": 5, "alert": 1},
        {"name": "tokens", "metric": "server.generation_token_rate", "stat": "value",
         "target": 100, "alert": 10},
        {"name": "preempt", "metric": "server.preemptions", "stat": "value", "target": 1,
         "alert": 10},
        {"name": "e2el max", "metric": "e2el", "stat": "max", "target": "5s", "alert": "9s"},
        {"name": "gpu p99", "metric": "gpu.utilization", "stat": "p99", "target": "90%",
         "alert": "99%"},
        {"name": "mem", "metric": "gpu.memory_utilization", "stat": "mean", "target": "50%",
         "alert": "90%"},
    )  # fmt: skip
    assert rules(p) == {}
    reasons = {s.objective: s.reason for s in skipped_objectives(p)}
    assert reasons["lag"].startswith("measured by the load generator only")
    assert reasons["goodput"].startswith("a throughput")
    assert reasons["tokens"].startswith("a throughput")
    assert reasons["preempt"].startswith("a total over the whole run")
    assert reasons["e2el max"] == "the engine's histogram has no max; use a percentile or mean"
    assert reasons["gpu p99"].startswith("a percentile pooled over GPUs")
    assert reasons["mem"] == "dcgm exposes no gpu.memory_utilization"
    # llama.cpp has no latency histograms: the same objective is skipped for that engine.
    e2el = policy({"name": "p99", "metric": "e2el", "stat": "p99", "target": "2s", "alert": "5s"})
    assert skipped_objectives(e2el, kind="llamacpp") == [
        Skipped("p99", "llamacpp exposes no server.e2el")
    ]


def test_render_is_a_rule_file_with_a_header() -> None:
    p = load_policy(ROOT / "slo/runbook.yaml")
    doc = rules_for(p)
    text = render_rules(doc)
    assert text.startswith("# Prometheus alerting rules for SLO policy 'runbook'")
    assert "# Not expressible as a server alert: none\n" in text
    assert yaml.safe_load(text) == doc


def test_parse_selector_and_bad_options() -> None:
    assert parse_selector(["model_name=m", "pod=~isvc-.*", "empty="]) == {
        "model_name": "m",
        "pod": "=~isvc-.*",
        "empty": "",
    }
    with pytest.raises(UsageError, match="expected key=value"):
        parse_selector(["model_name"])
    with pytest.raises(UsageError, match="label name"):
        parse_selector(["bad-label=1"])
    p = load_policy(ROOT / "slo/runbook.yaml")
    with pytest.raises(UsageError, match="--window"):
        rules_for(p, window="0m")
    with pytest.raises(UsageError, match="--for"):
        rules_for(p, for_="5 min")
    assert rules(p, for_="0s")["GPUUtilizationHigh"]["for"] == "0s"
