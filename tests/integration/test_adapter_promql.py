"""The PromQL of `harness slo argo` and `harness slo flagger` in a real Prometheus: every query,
with the controllers' template variables filled in, parses and evaluates, reads only the
canary's pods, and decides as the policy does: a healthy canary passes every check, a breaching
one fails every check, whatever the other pods beside it (stable or primary) show.

The series are vLLM's, vLLM's HTTP counter and DCGM's, written as history with promtool: a
healthy pod never answered a 5xx, so it has no 5xx series at all, as a real engine.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from support.argo_expr import argo_outcome
from support.prometheus import (
    PrometheusHandle,
    prometheus_available,
    prometheus_server,
    tsdb_from_openmetrics,
)

from harness.report.adapters import argo_documents, flagger_documents
from harness.sim.metrics import REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS
from harness.spec.policy import Policy, load_policy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STEP_S = 15
STEPS = 120  # 30 minutes of history: every 5m window is full
PER_STEP = 250  # requests per pod per step
WINDOW = "5m"
ROLLOUT, CANARY_HASH, STABLE_HASH = "mistral-7b", "6c9f8d7b5", "5d8f7c9b4"
TARGET = "llama"  # Flagger's target Deployment: the canary; <target>-primary is the primary

SHAPES = Policy.model_validate({"name": "shapes", "objectives": [
    {"name": "within-2s", "metric": "e2el", "stat": "share_under", "bound": "2s",
     "target": "99%", "alert": "95%"},
    {"name": "ttft-mean", "metric": "server.ttft", "stat": "mean", "target": "1s", "alert": "2s"},
    {"name": "queue-p90", "metric": "server.queue_waiting", "stat": "p90", "target": 1,
     "alert": 4},
]})  # fmt: skip
POLICIES = {
    "runbook": load_policy(ROOT / "slo" / "runbook.yaml"),
    "serving-health": load_policy(ROOT / "slo" / "serving-health.yaml"),
    "shapes": SHAPES,
}


@dataclass(frozen=True)
class Profile:
    latency_s: float
    ttft_s: float
    errors_per_step: int
    gpu_percent: float
    waiting: float
    kv_cache: float


GOOD = Profile(latency_s=0.4, ttft_s=0.1, errors_per_step=0, gpu_percent=70, waiting=0,
               kv_cache=0.5)  # fmt: skip
BAD = Profile(latency_s=7.0, ttft_s=3.0, errors_per_step=50, gpu_percent=99, waiting=5,
              kv_cache=1.0)  # fmt: skip

#: namespace -> (the canary's pod, its profile, the other pod, its profile)
PODS = {
    "argo-ok": (f"{ROLLOUT}-{CANARY_HASH}-q2w4e", GOOD, f"{ROLLOUT}-{STABLE_HASH}-x7k2p", BAD),
    "argo-bad": (f"{ROLLOUT}-{CANARY_HASH}-q2w4e", BAD, f"{ROLLOUT}-{STABLE_HASH}-x7k2p", GOOD),
    "flagger-ok": (f"{TARGET}-7d9c6b5f4-k8m2n", GOOD, f"{TARGET}-primary-6b5c4d3f2-p9q8r", BAD),
    "flagger-bad": (f"{TARGET}-7d9c6b5f4-k8m2n", BAD, f"{TARGET}-primary-6b5c4d3f2-p9q8r", GOOD),
}


def _series(ns: str, pod: str, p: Profile, times: list[int]) -> Iterator[tuple[str, str]]:
    """(family, sample line) of one pod's series over ``times``."""
    where = f'namespace="{ns}",pod="{pod}"'
    for i, t in enumerate(times):
        for name, bounds, value in (
            ("vllm:e2e_request_latency_seconds", REQUEST_LATENCY_BUCKETS, p.latency_s),
            ("vllm:time_to_first_token_seconds", TTFT_BUCKETS, p.ttft_s),
        ):
            for le in (*bounds, math.inf):
                count = PER_STEP * i if value <= le else 0
                bound = "+Inf" if le == math.inf else repr(float(le))
                labels = f'le="{bound}",model_name="m",{where}'
                yield f"{name}_bucket", f"{name}_bucket{{{labels}}} {count} {t}"
            yield f"{name}_count", f'{name}_count{{model_name="m",{where}}} {PER_STEP * i} {t}'
            total = PER_STEP * i * value
            yield f"{name}_sum", f'{name}_sum{{model_name="m",{where}}} {total} {t}'
        http = f'handler="/v1/chat/completions",method="POST",{where}'
        ok = (PER_STEP - p.errors_per_step) * i
        yield "http_requests_total", f'http_requests_total{{{http},status="2xx"}} {ok} {t}'
        if p.errors_per_step:  # an engine has no 5xx series before its first 5xx
            bad = p.errors_per_step * i
            yield "http_requests_total", f'http_requests_total{{{http},status="5xx"}} {bad} {t}'
        gpu = f'DCGM_FI_DEV_GPU_UTIL{{UUID="GPU-{pod}",gpu="0",{where}}} {p.gpu_percent} {t}'
        yield "DCGM_FI_DEV_GPU_UTIL", gpu
        yield (
            "vllm:num_requests_waiting",
            (f'vllm:num_requests_waiting{{model_name="m",{where}}} {p.waiting} {t}'),
        )
        yield (
            "vllm:kv_cache_usage_perc",
            (f'vllm:kv_cache_usage_perc{{model_name="m",{where}}} {p.kv_cache} {t}'),
        )


def _history(end: int) -> str:
    times = [end - STEP_S * (STEPS - i) for i in range(STEPS + 1)]
    families: dict[str, list[str]] = {}
    for ns, (canary, canary_profile, other, other_profile) in PODS.items():
        for pod, profile in ((canary, canary_profile), (other, other_profile)):
            for family, line in _series(ns, pod, profile, times):
                families.setdefault(family, []).append(line)
    lines = []
    for family, samples in families.items():
        lines.append(f"# TYPE {family} unknown")
        lines += samples
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrometheusHandle, int]]:
    require(prometheus_available(), "prometheus/promtool (apt-get install prometheus)")
    end = int(time.time()) - 120
    storage = tsdb_from_openmetrics(_history(end), tmp_path_factory.mktemp("adapters") / "tsdb")
    with prometheus_server([], storage_dir=storage) as prom:
        yield prom, end


def _query(prom: PrometheusHandle, promql: str, at: int) -> list[float]:
    """One instant query at ``at``: the vector's values. A query Prometheus refuses fails."""
    assert prom.url.startswith("http://127.0.0.1:")
    url = f"{prom.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": at})
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", promql
    return [float(r["value"][1]) for r in body["data"]["result"]]


def _filled(query: str, values: Mapping[str, str]) -> str:
    for pattern, value in values.items():
        query = re.sub(pattern, value, query)
    assert "{{" not in query, query
    return query


def _argo_vars(ns: str) -> dict[str, str]:
    return {r"\{\{args\.namespace\}\}": ns, r"\{\{args\.rollout\}\}": ROLLOUT,
            r"\{\{args\.canary-hash\}\}": CANARY_HASH}  # fmt: skip


def _flagger_vars(ns: str) -> dict[str, str]:
    return {r"\{\{ namespace \}\}": ns, r"\{\{ target \}\}": TARGET,
            r"\{\{ interval \}\}": WINDOW}  # fmt: skip


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_argo_queries_evaluate_and_decide_the_canary(
    prometheus: tuple[PrometheusHandle, int], policy_name: str
) -> None:
    prom, end = prometheus
    docs, _ = argo_documents(POLICIES[policy_name], "", window=WINDOW)
    metrics = docs[2]["spec"]["metrics"]
    assert metrics
    for ns, expected in (("argo-ok", "Successful"), ("argo-bad", "Failed")):
        outcomes = {}
        for metric in metrics:
            query = _filled(metric["provider"]["prometheus"]["query"], _argo_vars(ns))
            result = _query(prom, query, end)
            assert len(result) == 1, (ns, metric["name"], query, result)
            outcomes[metric["name"]] = (argo_outcome(metric, result), result[0])
        assert {n: o for n, (o, _) in outcomes.items()} == dict.fromkeys(outcomes, expected), (
            outcomes
        )


@pytest.mark.parametrize("policy_name", list(POLICIES))
def test_flagger_queries_evaluate_and_decide_the_canary(
    prometheus: tuple[PrometheusHandle, int], policy_name: str
) -> None:
    prom, end = prometheus
    docs, _ = flagger_documents(POLICIES[policy_name], target=TARGET, namespace="ns",
                                window=WINDOW)  # fmt: skip
    templates = {d["metadata"]["name"]: d for d in docs if d["kind"] == "MetricTemplate"}
    (canary,) = [d for d in docs if d["kind"] == "Canary"]
    metrics = canary["spec"]["analysis"]["metrics"]
    assert metrics
    for ns, expected in (("flagger-ok", True), ("flagger-bad", False)):
        passed: dict[str, Any] = {}
        for metric in metrics:
            template = templates[metric["templateRef"]["name"]]
            query = _filled(template["spec"]["query"], _flagger_vars(ns))
            result = _query(prom, query, end)
            assert len(result) == 1, (ns, metric["name"], query, result)  # Flagger reads one
            (value,) = result
            limits = metric["thresholdRange"]
            ok = limits.get("min", -math.inf) <= value <= limits.get("max", math.inf)
            passed[metric["name"]] = (ok, value)
        assert {n: ok for n, (ok, _) in passed.items()} == dict.fromkeys(passed, expected), passed


def test_no_traffic_is_no_data_never_a_pass(prometheus: tuple[PrometheusHandle, int]) -> None:
    """A canary no request reached: its latency and error checks have nothing to read."""
    prom, end = prometheus
    docs, _ = argo_documents(POLICIES["runbook"], "", window=WINDOW)
    for metric in docs[2]["spec"]["metrics"]:
        query = _filled(metric["provider"]["prometheus"]["query"], _argo_vars("nowhere"))
        assert argo_outcome(metric, _query(prom, query, end)) == "Inconclusive", metric["name"]
