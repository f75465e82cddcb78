"""`harness slo argo` and `harness slo flagger`: the documents validate against the controllers'
own CRD schemas (tests/data/crds/, vendored), thresholds are the policy's, Argo's conditions
decide as the gate does (no data: Inconclusive), and the Job's args parse with the real CLI."""

from __future__ import annotations

import math
import re
from functools import cache
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from support.argo_expr import argo_outcome

from harness.cli import cli
from harness.errors import UsageError
from harness.report.adapters import (
    FLAGGER_STEPS,
    argo_conditions,
    argo_documents,
    argo_header,
    fail_threshold,
    flagger_documents,
    flagger_header,
    policy_checks,
    render_documents,
)
from harness.report.alertrules import objective_expression
from harness.spec.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "tests" / "data" / "crds"
RUNBOOK = ROOT / "slo" / "runbook.yaml"


@cache
def crd_schema(file: str, kind: str) -> Any:
    """The CRD's OpenAPI schema as JSON Schema that refuses unknown fields, as the API server
    does with strict field validation (a misspelt key is an error, not a pruned one)."""
    for doc in yaml.safe_load_all((CRDS / file).read_text(encoding="utf-8")):
        if doc and doc["spec"]["names"]["kind"] == kind:
            version = next(v for v in doc["spec"]["versions"] if v.get("storage", True))
            return _strict(version["schema"]["openAPIV3Schema"])
    raise AssertionError(f"{kind} not in {file}")


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def validate_crd(doc: dict[str, Any]) -> None:
    file = "flagger.yaml" if doc["apiVersion"].startswith("flagger.app/") else (
        "argo-rollouts-analysistemplate.yaml"
    )  # fmt: skip
    jsonschema.Draft7Validator(crd_schema(file, doc["kind"])).validate(doc)


def parses(args: list[str]) -> click.Context:
    """The args as the real CLI parses them (as tests/unit/test_deploy_manifests.py)."""
    group_ctx = cli.make_context("harness", list(args), resilient_parsing=False)
    command = cli.get_command(group_ctx, args[0])
    assert command is not None, args[0]
    return command.make_context(args[0], list(args[1:]))


def argo(policy: Policy, **kw: Any) -> list[dict[str, Any]]:
    docs, _ = argo_documents(policy, "schema: 1\n", **kw)
    return docs


def flagger(policy: Policy, **kw: Any) -> list[dict[str, Any]]:
    docs, _ = flagger_documents(policy, target="mistral-7b", namespace="mlops-serving", **kw)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_runbook_argo_thresholds_are_the_policys_alert_tiers_and_validate() -> None:
    docs = argo(load_policy(RUNBOOK))
    assert [d["kind"] for d in docs] == ["ConfigMap", "AnalysisTemplate", "AnalysisTemplate"]
    for doc in docs[1:]:
        validate_crd(doc)
    slo = docs[2]
    metrics = {m["name"]: m for m in slo["spec"]["metrics"]}
    assert list(metrics) == ["p50-latency", "p99-latency", "error-rate", "gpu-utilization"]
    p99 = metrics["p99-latency"]
    assert p99["failureCondition"] == "len(result) > 0 && result[0] > 5"
    assert p99["successCondition"] == ("len(result) > 0 && !isNaN(result[0]) && result[0] <= 5")
    assert metrics["error-rate"]["failureCondition"].endswith("result[0] > 0.01")
    assert metrics["gpu-utilization"]["failureCondition"].endswith("result[0] > 0.95")
    # Advisory (critical: false): measured and shown, never deciding, as the gate judges it.
    assert slo["spec"]["dryRun"] == [{"metricName": "gpu-utilization"}]
    assert p99["provider"]["prometheus"]["query"] == (
        "histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket"
        '{namespace="{{args.namespace}}",pod=~"{{args.rollout}}-{{args.canary-hash}}-[a-z0-9]+"}'
        "[5m])))"
    )
    assert (p99["interval"], p99["count"], p99["failureLimit"]) == ("5m", 3, 0)
    # Every {{args.X}} a query uses is declared, or Argo cannot resolve the template.
    assert [a["name"] for a in slo["spec"]["args"]] == ["namespace", "rollout", "canary-hash"]


def test_fail_at_target_moves_every_threshold_to_the_target() -> None:
    policy = load_policy(RUNBOOK)
    metrics = argo(policy, fail_at="target")[2]["spec"]["metrics"]
    p99 = next(m for m in metrics if m["name"] == "p99-latency")
    assert p99["failureCondition"] == "len(result) > 0 && result[0] > 2"  # "< 2s"
    ranges = {
        m["name"]: m["thresholdRange"]
        for m in by_kind(flagger(policy, fail_at="target"), "Canary")[0]["spec"]["analysis"][
            "metrics"
        ]
    }
    assert ranges == {"p50-latency": {"max": 0.5}, "p99-latency": {"max": 2},
                      "error-rate": {"max": 0.001}}  # fmt: skip


def test_argo_conditions_decide_as_the_gate() -> None:
    """PASS and WARN succeed, FAIL fails, no data (empty vector, NaN) is Inconclusive."""
    metric = next(
        m for m in argo(load_policy(RUNBOOK))[2]["spec"]["metrics"] if m["name"] == "p99-latency"
    )
    assert argo_outcome(metric, [1.0]) == "Successful"  # PASS
    assert argo_outcome(metric, [4.0]) == "Successful"  # WARN: between target and alert
    assert argo_outcome(metric, [5.0]) == "Successful"  # the runbook's alert is "> 5s"
    assert argo_outcome(metric, [5.5]) == "Failed"
    assert argo_outcome(metric, []) == "Inconclusive"
    assert argo_outcome(metric, [math.nan]) == "Inconclusive"


def test_higher_is_better_shares_and_objectives_without_alert() -> None:
    policy = Policy.model_validate({"name": "shares", "objectives": [
        {"name": "within 2s", "metric": "e2el", "stat": "share_under", "bound": "2s",
         "target": "99%", "alert": "95%"},
        {"name": "ttft", "metric": "server.ttft", "stat": "p90", "target": "800ms"},
    ]})  # fmt: skip
    checks, skipped = policy_checks(policy, selector={}, window="5m")
    assert skipped == []
    share, ttft = checks
    assert share.threshold == pytest.approx(0.95)  # the policy's "95%"
    assert not share.fails_above
    assert (ttft.threshold, ttft.fails_above) == (0.8, True)  # no alert: fails at the target
    assert argo_conditions(share) == (
        "len(result) > 0 && !isNaN(result[0]) && result[0] >= 0.95",
        "len(result) > 0 && result[0] < 0.95",
    )
    metrics = by_kind(flagger(policy), "Canary")[0]["spec"]["analysis"]["metrics"]
    assert [m["thresholdRange"] for m in metrics] == [{"min": 0.95}, {"max": 0.8}]
    metric = next(m for m in argo(policy)[2]["spec"]["metrics"] if m["name"] == "within-2s")
    assert argo_outcome(metric, [0.97]) == "Successful"
    assert argo_outcome(metric, [0.90]) == "Failed"


def test_fail_threshold_on_bands() -> None:
    gpu = next(o for o in load_policy(RUNBOOK).objectives if o.name == "gpu-utilization")
    assert fail_threshold(gpu) == pytest.approx(0.95)
    # The band's bad edge: under 60 % is a WARN, never a FAIL.
    assert fail_threshold(gpu, "target") == pytest.approx(0.8)


def test_the_job_check_runs_the_harness_with_the_policy_in_its_configmap() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    docs, _ = argo_documents(load_policy(RUNBOOK), text, image="registry.local/harness:1")
    configmap, job_template = docs[0], docs[1]
    assert yaml.safe_load(configmap["data"]["policy.yaml"]) == yaml.safe_load(text)
    assert job_template["spec"]["args"] == [{"name": "canary-url"}]
    metric = job_template["spec"]["metrics"][0]
    assert set(metric) == {"name", "provider"}  # one measurement: the run's own verdict
    job = metric["provider"]["job"]["spec"]
    assert job["backoffLimit"] == 0
    pod = job["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.local/harness:1"
    ctx = parses(container["args"])
    assert ctx.params["scenario"] == Path("/opt/harness/scenarios/canary-gate.yaml")
    assert ctx.params["target_url"] == "{{args.canary-url}}"
    policy_path = ctx.params["policy_file"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "policy")
    assert policy_path.parent == Path(mount["mountPath"])
    volume = next(v for v in pod["volumes"] if v["name"] == "policy")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert policy_path.name in configmap["data"]
    assert ctx.params["out"] == Path(
        next(m for m in container["volumeMounts"] if m["name"] == "results")["mountPath"]
    )


def test_flagger_templates_and_canary_validate_and_carry_the_thresholds() -> None:
    docs = flagger(load_policy(RUNBOOK), scenario="canary-gate")
    templates = by_kind(docs, "MetricTemplate")
    (canary,) = by_kind(docs, "Canary")
    for doc in docs:
        validate_crd(doc)
    analysis = canary["spec"]["analysis"]
    assert analysis["stepWeights"] == list(FLAGGER_STEPS)
    metrics = {m["name"]: m for m in analysis["metrics"]}
    assert {n: m["thresholdRange"] for n, m in metrics.items()} == {
        "p50-latency": {"max": 1}, "p99-latency": {"max": 5}, "error-rate": {"max": 0.01},
    }  # fmt: skip
    # The advisory GPU row (critical: false) never vetoes the gate, and Flagger has no advisory
    # check: it is left out, and the header says so.
    assert len(templates) == 3
    names = {t["metadata"]["name"]: t for t in templates}
    for metric in metrics.values():
        assert metric["interval"] == "5m"
        ref = metric["templateRef"]
        assert ref["namespace"] == names[ref["name"]]["metadata"]["namespace"]
    p99 = names[metrics["p99-latency"]["templateRef"]["name"]]["spec"]
    prometheus = "http://prometheus.monitoring.svc.cluster.local:9090"
    assert p99["provider"] == {"type": "prometheus", "address": prometheus}
    assert "[{{ interval }}]" in p99["query"]
    canary_pods = 'namespace="{{ namespace }}",pod=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
    assert canary_pods in p99["query"]
    (hook,) = analysis["webhooks"]
    assert hook["type"] == "pre-rollout"
    assert hook["url"] == "http://harness-webhook.mlops-serving:8080/"
    assert hook["metadata"] == {
        "url": "http://mistral-7b-canary.mlops-serving.svc.cluster.local:8000/v1",
        "scenario": "canary-gate",
    }


def test_error_shares_read_zero_without_errors_for_a_canary_not_for_an_alert() -> None:
    errors = next(o for o in load_policy(RUNBOOK).objectives if o.name == "error-rate")
    canary = objective_expression(errors)
    assert not isinstance(canary, str)
    assert canary.promql.startswith("(sum(rate(http_requests_total{")
    assert ' or vector(0)) / sum(rate(http_requests_total{handler=~"' in canary.promql


def test_skipped_objectives_are_listed_with_why() -> None:
    policy = load_policy(ROOT / "slo" / "serving-health.yaml")
    docs, skipped = flagger_documents(policy, target="m", namespace="ns")
    reasons = {s.objective: s.reason for s in skipped}
    assert "gateway" in reasons["gateway-overhead"]  # the gateway's series are not the canary's
    assert "gateway" in reasons["gateway-errors"]
    assert "total over the whole run" in reasons["preemptions"]
    text = render_documents(flagger_header(policy, "alert"), docs, skipped)
    assert "# Objectives without a Prometheus check:" in text
    assert "#   kv-cache: advisory (critical: false)" in text
    assert "#   preemptions: a total over the whole run" in text
    checked = {m["name"] for m in by_kind(docs, "Canary")[0]["spec"]["analysis"]["metrics"]}
    assert checked.isdisjoint(reasons)
    assert checked == {"p50-latency", "p99-latency", "error-rate"}  # the critical ones
    argo_metrics = argo(policy)[2]["spec"]
    # Argo measures advisory rows in dryRun; engine-queue has no alert tier: its target.
    assert {"metricName": "engine-queue"} in argo_metrics["dryRun"]
    queue = next(m for m in argo_metrics["metrics"] if m["name"] == "engine-queue")
    assert queue["failureCondition"] == "len(result) > 0 && result[0] > 1"


def test_cli_writes_what_the_functions_render(tmp_path: Path) -> None:
    policy = load_policy(RUNBOOK)
    runner = CliRunner()
    out = tmp_path / "argo.yaml"
    done = runner.invoke(cli, ["slo", "argo", str(RUNBOOK), "--out", str(out),
                               "--selector", "model_name={{args.model}}"])  # fmt: skip
    assert done.exit_code == 0, done.output
    docs, skipped = argo_documents(policy, RUNBOOK.read_text(encoding="utf-8"),
                                   selector={"model_name": "{{args.model}}"})  # fmt: skip
    assert out.read_text(encoding="utf-8") == render_documents(
        argo_header(policy, "alert"), docs, skipped
    )
    loaded = [d for d in yaml.safe_load_all(out.read_text(encoding="utf-8")) if d]
    assert loaded == docs
    assert "model" in [a["name"] for a in loaded[2]["spec"]["args"]]

    done = runner.invoke(cli, ["slo", "flagger", str(RUNBOOK), "--target", "mistral-7b",
                               "--namespace", "mlops-serving"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "# Objectives without a Prometheus check:\n#   gpu-utilization: advisory" in (
        done.output
    )
    docs, _ = flagger_documents(policy, target="mistral-7b", namespace="mlops-serving")
    assert [d for d in yaml.safe_load_all(done.output) if d] == docs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": "1h"}, "Flagger takes whole seconds or minutes"),
        ({"window": "5x"}, "expected a Prometheus duration"),
        ({"webhook_timeout": "1h"}, "--webhook-timeout"),
        ({"port": 0}, "--port 0"),
    ],
)
def test_flagger_refuses_what_flagger_would(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        flagger_documents(load_policy(RUNBOOK), target="m", namespace="ns", **kwargs)


def test_argo_refuses_a_bad_window_and_count() -> None:
    with pytest.raises(UsageError, match="--window"):
        argo_documents(load_policy(RUNBOOK), "", window="0m")
    with pytest.raises(UsageError, match="--count"):
        argo_documents(load_policy(RUNBOOK), "", count=0)


def test_names_are_kubernetes_names_and_unique() -> None:
    policy = Policy.model_validate({"name": "My Policy!", "objectives": [
        {"name": "P99 latency", "metric": "e2el", "stat": "p99", "target": "2s"},
        {"name": "p99-latency", "metric": "e2el", "stat": "p90", "target": "2s"},
    ]})  # fmt: skip
    docs = flagger(policy)
    names = [d["metadata"]["name"] for d in by_kind(docs, "MetricTemplate")]
    assert names == ["harness-my-policy-p99-latency", "harness-my-policy-p99-latency-2"]
    assert [m["name"] for m in argo(policy)[2]["spec"]["metrics"]] == [
        "p99-latency", "p99-latency-2"]  # fmt: skip
    for doc in docs:
        validate_crd(doc)


def test_a_policy_without_promql_objectives_gets_only_the_job_check() -> None:
    policy = Policy.model_validate({"name": "client-only", "objectives": [
        {"name": "lag", "metric": "schedule_lag", "stat": "p99", "target": "10ms"}]})  # fmt: skip
    docs, skipped = argo_documents(policy, "")
    assert [d["metadata"]["name"] for d in docs] == ["harness-client-only-policy",
                                                     "harness-client-only-run"]  # fmt: skip
    assert [s.objective for s in skipped] == ["lag"]
