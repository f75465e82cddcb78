"""The generated alert rules in real promtool: they load, and fire exactly on breaching series.

`promtool test rules` evaluates the rules on synthetic series as Prometheus would (rates,
histogram_quantile, `for`), so each runbook alert is shown firing on series that breach its
alert tier and silent on series that do not.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import run_cli

from harness.report.alertrules import render_rules, rules_for, skipped_objectives
from harness.spec.policy import Policy, load_policy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MODEL = "mistral-7b"
MINUTES = 20
E2E = "vllm:e2e_request_latency_seconds"
E2E_BOUNDS = (0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480,
              960, 1920, 7680, math.inf)  # fmt: skip
CHAT = 'handler="/v1/chat/completions",method="POST"'


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary is not None
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def counter(series: str, per_minute: float) -> dict[str, str]:
    return {"series": series, "values": f"0+{per_minute:g}x{MINUTES}"}


def gauge(series: str, value: float) -> dict[str, str]:
    return {"series": series, "values": f"{value:g}+0x{MINUTES}"}


def e2e_histogram(model: str, per_minute: dict[float, int]) -> list[dict[str, str]]:
    """Cumulative buckets of vLLM's e2e histogram: per_minute requests at each latency."""
    out = []
    for le in E2E_BOUNDS:
        count = sum(n for latency, n in per_minute.items() if latency <= le)
        bound = "+Inf" if le == math.inf else f"{float(le)}"
        labels = f'engine="0",le="{bound}",model_name="{model}"'
        out.append(counter(f"{E2E}_bucket{{{labels}}}", count))
    return out


def fires(doc: dict[str, Any], alert: str, at: str) -> dict[str, Any]:
    """An alert_rule_test expecting `alert` firing once, with its labels and annotations."""
    rule = next(r for r in doc["groups"][0]["rules"] if r["alert"] == alert)
    expected = {"exp_labels": rule["labels"], "exp_annotations": rule["annotations"]}
    return {"eval_time": at, "alertname": alert, "exp_alerts": [expected]}


def silent(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def test_runbook_rules_pass_promtool_check_and_unit_tests(
    prometheus_bin: str, tmp_path: Path
) -> None:
    rules_file = tmp_path / "runbook-rules.yaml"
    done = run_cli(
        "slo", "rules", "slo/runbook.yaml", "--selector", f"model_name={MODEL}",
        "--out", str(rules_file), timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    policy = load_policy(ROOT / "slo/runbook.yaml")
    doc = rules_for(policy, selector={"model_name": MODEL})
    assert rules_file.read_text(encoding="utf-8") == render_rules(doc, skipped_objectives(policy))

    checked = promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout

    gpu = 'DCGM_FI_DEV_GPU_UTIL{{Hostname="node1",UUID="GPU-{0}",gpu="{0}"}}'
    breach = {
        "name": "p99 at 5.8 s, 2 % errors, GPUs at 97 %",
        "interval": "1m",
        "input_series": [
            # 988 fast, 12 slow a minute: p99 interpolates to 5.8 s in (5, 10]; p50 is 0.4 s.
            *e2e_histogram(MODEL, {0.4: 988, 7.0: 12}),
            counter(f'http_requests_total{{{CHAT},status="2xx"}}', 980),
            counter(f'http_requests_total{{{CHAT},status="5xx"}}', 20),
            gauge(gpu.format(0), 97),
            gauge(gpu.format(1), 97),
        ],
        "alert_rule_test": [
            silent("ModelServingHighLatency", "4m"),  # pending: breached for less than `for`
            fires(doc, "ModelServingHighLatency", "10m"),
            silent("SloP50LatencyBreached", "10m"),
            fires(doc, "ModelServingHighErrorRate", "10m"),
            fires(doc, "GPUUtilizationHigh", "10m"),
        ],
    }
    slow_median = {
        "name": "p50 at 1.25 s, p99 at 1.5 s",
        "interval": "1m",
        "input_series": e2e_histogram(MODEL, {1.2: 1000}),
        "alert_rule_test": [
            fires(doc, "SloP50LatencyBreached", "10m"),
            silent("ModelServingHighLatency", "10m"),
        ],
    }
    healthy = {
        "name": "p99 at 0.9 s, 0.05 % errors, GPU mean 83.5 %, another model slow",
        "interval": "1m",
        "input_series": [
            *e2e_histogram(MODEL, {0.4: 980, 0.9: 20}),
            *e2e_histogram("other-model", {7.0: 1000}),  # outside the selector
            counter(f'http_requests_total{{{CHAT},status="2xx"}}', 9995),
            counter(f'http_requests_total{{{CHAT},status="5xx"}}', 5),
            counter('http_requests_total{handler="/v1/models",method="GET",status="5xx"}', 900),
            gauge(gpu.format(0), 97),
            gauge(gpu.format(1), 70),
        ],
        "alert_rule_test": [
            silent(alert, "10m")
            for alert in (
                "ModelServingHighLatency",
                "SloP50LatencyBreached",
                "ModelServingHighErrorRate",
                "GPUUtilizationHigh",
            )
        ],
    }
    tests = {
        "rule_files": [rules_file.name],
        "evaluation_interval": "1m",
        "tests": [breach, slow_median, healthy],
    }
    test_file = tmp_path / "runbook-rules.test.yaml"
    test_file.write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    tested = promtool("test", "rules", str(test_file))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_expression_shape_loads_in_promtool(prometheus_bin: str, tmp_path: Path) -> None:
    """Means, high percentiles, subqueries, scaled gauges and gateway rows are valid PromQL."""
    extra = Policy.model_validate(
        {
            "name": "shapes",
            "objectives": [
                {"name": "ttft mean", "metric": "ttft", "stat": "mean", "target": "1s",
                 "alert": "2s"},
                {"name": "itl", "metric": "server.itl", "stat": "p99.9", "target": "50ms",
                 "alert": "200ms"},
                {"name": "queue", "metric": "server.queue_waiting", "stat": "max", "target": 1,
                 "alert": 8},
                {"name": "queue p90", "metric": "server.queue_waiting", "stat": "p90",
                 "target": 1, "alert": 4},
                {"name": "clock", "metric": "gpu.sm_clock", "stat": "min", "target": "1400MHz",
                 "alert": "1000MHz"},
                {"name": "within 2s", "metric": "e2el", "stat": "share_under", "bound": "2s",
                 "target": "99%", "alert": "95%"},
            ],
        }
    )  # fmt: skip
    selector = {"model_name": 'a"b', "namespace": "=~prod-.*"}
    for policy, count in ((load_policy(ROOT / "slo/serving-health.yaml"), 8), (extra, 6)):
        path = tmp_path / f"{policy.name}.yaml"
        doc = rules_for(policy, selector=selector, window="2m", for_="1m")
        path.write_text(render_rules(doc, skipped_objectives(policy)), encoding="utf-8")
        checked = promtool("check", "rules", str(path))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert f"SUCCESS: {count} rules found" in checked.stdout
