"""Argo Rollouts and Flagger canary analysis from an SLO policy, so the controller that shifts
the traffic judges by the policy the CI gate judges by.

Each objective with a server-side form becomes one Prometheus check over the PromQL that
`harness slo rules` alerts on (``alertrules.objective_expression``), narrowed to the canary's
own pods. A check fails past the policy's alert tier, as the gate fails a run only past it (a
WARN promotes), or past the target with ``fail_at="target"``; an objective without an alert
tier fails at its target, as the judge fails it. No data decides nothing: Argo's measurement is
then Inconclusive (the rollout pauses), as the gate holds on INCONCLUSIVE; Flagger can only
count it as a failed check. Argo also gets a Job check, `harness run` against the canary, whose
exit code is the verdict. Pure: documents and their YAML text; the CLI writes them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import yaml

from harness.errors import UsageError
from harness.report.alertrules import (
    EngineKind,
    Skipped,
    check_duration,
    objective_expression,
    promql_number,
    skipped_lines,
)
from harness.spec.policy import Band, Objective, Policy

FailAt = Literal["alert", "target"]

ARGO_API = "argoproj.io/v1alpha1"
FLAGGER_API = "flagger.app/v1beta1"
IMAGE = "REGISTRY/llm-slo-harness:0.1.0"  # deploy/k8s's placeholder: build deploy/Dockerfile
SCENARIO = "/opt/harness/scenarios/canary-gate.yaml"  # in the image (deploy/Dockerfile)
PROMETHEUS = "http://prometheus.monitoring.svc.cluster.local:9090"
API_KEY_SECRET = "harness-api-key"  # as deploy/k8s; optional: a target without auth needs none
POLICY_DIR = "/policy"

#: The canary's own pods, in each controller's template variables. Argo names a pod
#: <rollout>-<pod-template-hash>-<suffix> (the Rollout passes the hash with
#: ``valueFrom: {podTemplateHashValue: Latest}``); Flagger runs the canary in the target
#: Deployment and matches its pods with this regex in its own queries (the primary's pods are
#: <target>-primary-..., which it does not match).
ARGO_SELECTOR = {
    "namespace": "{{args.namespace}}",
    "pod": "=~{{args.rollout}}-{{args.canary-hash}}-[a-z0-9]+",
}
FLAGGER_SELECTOR = {
    "namespace": "{{ namespace }}",
    "pod": "=~{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)",
}
#: Flagger's analysis, as the gate walks by default: 10 %, 50 %, then promotion.
FLAGGER_STEPS = (10, 50)
#: Failed checks before Flagger rolls back: it counts a check without data as failed, so one
#: gap in the series (a scrape missed, a pod restarted) does not roll back on its own.
FLAGGER_THRESHOLD = 3
WEBHOOK_PORT = 8080  # `harness webhook`'s default --port
#: Above `harness webhook`'s default --timeout (60 s), which it answers every call within.
WEBHOOK_TIMEOUT = "70s"

_GATEWAY = "measured at the gateway, whose series do not tell the canary's pods from the others"
_ADVISORY = "advisory (critical: false): the gate never vetoes on it; Flagger has no advisory check"
_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")
_FLAGGER_DURATION = re.compile(r"^[1-9][0-9]*[ms]$")


class Check(NamedTuple):
    """One objective as a controller's check: its PromQL and the value past which it fails."""

    objective: Objective
    promql: str
    threshold: float
    fails_above: bool  # lower is better: the check fails above the threshold


def fail_threshold(obj: Objective, fail_at: FailAt = "alert") -> float:
    """The value past which the objective fails: its alert tier (where the gate's FAIL starts),
    or with ``fail_at="target"`` or no alert tier, the target's edge on the bad side."""
    if fail_at == "alert" and obj.alert is not None:
        return obj.alert
    target = obj.target
    if isinstance(target, Band):
        return target.max if obj.judged.better == "lower" else target.min
    return target


def policy_checks(
    policy: Policy,
    *,
    selector: Mapping[str, str],
    window: str,
    fail_at: FailAt = "alert",
    kind: EngineKind = "vllm",
) -> tuple[list[Check], list[Skipped]]:
    """The policy's objectives as checks, and those with no PromQL form, with why."""
    checks: list[Check] = []
    skipped: list[Skipped] = []
    for obj in policy.objectives:
        if obj.definition.source == "gateway":
            skipped.append(Skipped(obj.name, _GATEWAY))
            continue
        expr = objective_expression(obj, selector=selector, window=window, kind=kind)
        if isinstance(expr, str):
            skipped.append(Skipped(obj.name, expr))
            continue
        lower = obj.judged.better == "lower"
        checks.append(Check(obj, expr.promql, fail_threshold(obj, fail_at), lower))
    return checks, skipped


def argo_conditions(check: Check) -> tuple[str, str]:
    """Argo's successCondition and failureCondition: an empty or NaN result meets neither,
    so the measurement is Inconclusive, never a pass."""
    limit = promql_number(check.threshold)
    ok, bad = ("<=", ">") if check.fails_above else (">=", "<")
    success = f"len(result) > 0 && !isNaN(result[0]) && result[0] {ok} {limit}"
    return success, f"len(result) > 0 && result[0] {bad} {limit}"


def argo_documents(
    policy: Policy,
    policy_text: str,
    *,
    selector: Mapping[str, str] | None = None,
    window: str = "5m",
    count: int = 3,
    prometheus: str = PROMETHEUS,
    image: str = IMAGE,
    scenario: str = SCENARIO,
    fail_at: FailAt = "alert",
) -> tuple[list[dict[str, Any]], list[Skipped]]:
    """A ConfigMap holding the policy, the Job AnalysisTemplate that runs `harness run` against
    ``{{args.canary-url}}`` judged by it, and the Prometheus AnalysisTemplate of its checks
    (left out when no objective has a PromQL form)."""
    check_duration("--window", window, nonzero=True)
    if count < 1:
        raise UsageError(f"--count {count}: expected at least one measurement")
    sel = {**ARGO_SELECTOR, **(selector or {})}
    checks, skipped = policy_checks(policy, selector=sel, window=window, fail_at=fail_at)
    base = f"harness-{_slug(policy.name)}"
    policy_map = f"{base}-policy"
    docs = [
        _configmap(policy_map, policy.name, {"policy.yaml": policy_text}),
        _argo_job(f"{base}-run", policy.name, policy_map, image, scenario),
    ]
    if checks:
        metrics = []
        for name, check in zip(_unique(_slug(c.objective.name) for c in checks), checks,
                               strict=True):  # fmt: skip
            success, failure = argo_conditions(check)
            metrics.append(
                {
                    "name": name,
                    "interval": window,
                    "count": count,
                    "failureLimit": 0,
                    "successCondition": success,
                    "failureCondition": failure,
                    "provider": {"prometheus": {"address": prometheus, "query": check.promql}},
                }
            )
        args = dict.fromkeys(a for c in checks for a in _ARG.findall(c.promql))
        spec: dict[str, Any] = {"args": [{"name": a} for a in args], "metrics": metrics}
        advisory = [m["name"] for m, c in zip(metrics, checks, strict=True)
                    if not c.objective.critical]  # fmt: skip
        if advisory:  # measured and shown, never deciding: the judge's advisory objectives
            spec["dryRun"] = [{"metricName": name} for name in advisory]
        docs.append(_object(ARGO_API, "AnalysisTemplate", f"{base}-slo", policy.name, spec))
    return docs, skipped


def flagger_documents(
    policy: Policy,
    *,
    target: str,
    namespace: str,
    selector: Mapping[str, str] | None = None,
    window: str = "5m",
    prometheus: str = PROMETHEUS,
    port: int = 8000,
    scenario: str | None = None,
    webhook_timeout: str = WEBHOOK_TIMEOUT,
    fail_at: FailAt = "alert",
) -> tuple[list[dict[str, Any]], list[Skipped]]:
    """One MetricTemplate per check (its range is Flagger's ``{{ interval }}``) and a Canary
    whose analysis references them with the policy's thresholds, after a pre-rollout webhook
    to `harness webhook` that runs the scenario against the canary's own Service."""
    check_duration("--window", window, nonzero=True)
    if not _FLAGGER_DURATION.match(window):
        raise UsageError(f"--window {window!r}: Flagger takes whole seconds or minutes (5m, 90s)")
    if not _FLAGGER_DURATION.match(webhook_timeout):
        raise UsageError(
            f"--webhook-timeout {webhook_timeout!r}: Flagger takes whole seconds or minutes (70s)"
        )
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port}: expected a TCP port")
    sel = {**FLAGGER_SELECTOR, **(selector or {})}
    every, skipped = policy_checks(policy, selector=sel, window="{{ interval }}", fail_at=fail_at)
    checks = [c for c in every if c.objective.critical]
    skipped += [Skipped(c.objective.name, _ADVISORY) for c in every if not c.objective.critical]
    base = f"harness-{_slug(policy.name)}"
    docs: list[dict[str, Any]] = []
    metrics: list[dict[str, Any]] = []
    for name, check in zip(_unique(_slug(c.objective.name) for c in checks), checks, strict=True):
        template = f"{base}-{name}"
        spec = {"provider": {"type": "prometheus", "address": prometheus}, "query": check.promql}
        meta_ns = {"namespace": namespace}
        docs.append(_object(FLAGGER_API, "MetricTemplate", template, policy.name, spec, meta_ns))
        side = "max" if check.fails_above else "min"
        metrics.append(
            {
                "name": check.objective.name,
                "templateRef": {"name": template, "namespace": namespace},
                "thresholdRange": {side: _plain(check.threshold)},
                "interval": window,
            }
        )
    meta = {"url": f"http://{target}-canary.{namespace}.svc.cluster.local:{port}/v1"}
    if scenario is not None:
        meta["scenario"] = scenario
    webhook = {
        "name": "harness-gate",
        "type": "pre-rollout",
        "url": f"http://harness-webhook.{namespace}:{WEBHOOK_PORT}/",
        "timeout": webhook_timeout,
        "metadata": meta,
    }
    analysis: dict[str, Any] = {
        "interval": "1m",
        "threshold": FLAGGER_THRESHOLD,
        "stepWeights": list(FLAGGER_STEPS),
        "metrics": metrics,
        "webhooks": [webhook],
    }
    spec = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "service": {"port": port},
        "analysis": analysis,
    }
    docs.append(_object(FLAGGER_API, "Canary", target, policy.name, spec, {"namespace": namespace}))
    return docs, skipped


def render_documents(
    header: Sequence[str], docs: Sequence[Mapping[str, Any]], skipped: Sequence[Skipped]
) -> str:
    """The documents as one YAML stream, after a header of comments and the objectives left
    out with why (as `slo rules` lists them)."""
    lines = [f"# {line}" if line else "#" for line in header]
    lines += skipped_lines("Objectives without a Prometheus check", skipped)
    body = yaml.dump_all(
        [dict(d) for d in docs], Dumper=_Dumper, sort_keys=False, explicit_start=True,
        default_flow_style=False, allow_unicode=True, width=1 << 16,
    )  # fmt: skip
    return "\n".join(lines) + "\n" + body


def argo_header(policy: Policy, fail_at: FailAt) -> list[str]:
    base = f"harness-{_slug(policy.name)}"
    return [
        f"Argo Rollouts analysis for SLO policy {policy.name!r}, made by `harness slo argo`.",
        "The CI gate judges the same policy: change the policy and regenerate, do not edit.",
        f"{base}-run: a Job runs `harness run` against {{{{args.canary-url}}}}, judged by the",
        f"  policy in ConfigMap {base}-policy; exit 0 (PASS, WARN) is Successful, any other",
        "  code (FAIL, INCONCLUSIVE, INVALID) fails the measurement.",
        f"{base}-slo: one Prometheus metric per objective over the canary's pods, failing",
        f"  past the policy's {_tier(fail_at)};",
        "  no data is Inconclusive (the rollout pauses). Advisory objectives (critical: false)",
        "  run in dryRun: measured and shown, never deciding, as the gate judges them.",
        "  Rollout args: namespace, rollout (its name), canary-hash",
        "  (valueFrom: {podTemplateHashValue: Latest}).",
    ]


def flagger_header(policy: Policy, fail_at: FailAt) -> list[str]:
    return [
        f"Flagger canary analysis for SLO policy {policy.name!r}, made by `harness slo flagger`.",
        "The CI gate judges the same policy: change the policy and regenerate, do not edit.",
        "One MetricTemplate per critical objective over the canary's pods; the Canary's analysis",
        f"fails a check past the policy's {_tier(fail_at)};",
        "Flagger also fails a check without data.",
        "Its pre-rollout webhook asks `harness webhook` to run its scenario against the canary",
        "(docs/webhook.md): metadata url is the canary's OpenAI base URL, scenario (optional)",
        "a scenario's name among the webhook's --scenarios; its timeout must exceed the",
        "webhook's --timeout.",
        "Merge spec.analysis into your Canary, or apply it as it is.",
    ]


def _tier(fail_at: FailAt) -> str:
    return "alert tier (its target where it has none)" if fail_at == "alert" else "target"


def _argo_job(
    name: str, policy_name: str, policy_map: str, image: str, scenario: str
) -> dict[str, Any]:
    """The Job check: the harness's own run and verdict, its exit code the measurement."""
    args = ["run", scenario, "--target", "{{args.canary-url}}",
            "--policy", f"{POLICY_DIR}/policy.yaml", "--out", "/results"]  # fmt: skip
    key = {"name": API_KEY_SECRET, "key": "api-key", "optional": True}
    container = {
        "name": "harness",
        "image": image,
        "args": args,
        "env": [{"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": key}}],
        "volumeMounts": [
            {"name": "policy", "mountPath": POLICY_DIR, "readOnly": True},
            {"name": "results", "mountPath": "/results"},
        ],
    }
    labels = {"app": "harness", "role": "analysis"}
    job = {
        "metadata": {"labels": labels},
        "spec": {
            "backoffLimit": 0,  # a second run is a second verdict: the first one stands
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": [
                        {"name": "policy", "configMap": {"name": policy_map}},
                        {"name": "results", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    spec = {"args": [{"name": "canary-url"}],
            "metrics": [{"name": "harness-run", "provider": {"job": job}}]}  # fmt: skip
    return _object(ARGO_API, "AnalysisTemplate", name, policy_name, spec)


def _configmap(name: str, policy_name: str, data: dict[str, str]) -> dict[str, Any]:
    doc = _object("v1", "ConfigMap", name, policy_name, {})
    del doc["spec"]
    doc["data"] = data
    return doc


def _object(
    api: str,
    kind: str,
    name: str,
    policy_name: str,
    spec: Mapping[str, Any],
    meta: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "harness", "harness/policy": _slug(policy_name)}
    metadata = {"name": name, **(meta or {}), "labels": labels}
    return {"apiVersion": api, "kind": kind, "metadata": metadata, "spec": dict(spec)}


def _slug(text: str) -> str:
    """A Kubernetes name piece: lower-case letters, digits and single dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50].strip("-") or "slo"


def _unique(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for name in names:
        candidate, n = name, 2
        while candidate in seen:
            candidate, n = f"{name}-{n}", n + 1
        seen.add(candidate)
        out.append(candidate)
    return out


def _plain(value: float) -> float | int:
    """5 rather than 5.0, 0.95 rather than 0.9500000000000001: as the policy wrote it."""
    value = float(promql_number(value))
    return int(value) if value.is_integer() else value


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the policy file in its ConfigMap) as literal blocks; no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str)
