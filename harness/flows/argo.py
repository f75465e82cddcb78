"""`harness slo argo POLICY`: the policy as Argo Rollouts analysis (a Job running the harness
against the canary, and Prometheus checks of its objectives)."""

from __future__ import annotations

from pathlib import Path

from harness.flows.rules import write_rules as write_rules
from harness.report.adapters import (
    IMAGE,
    PROMETHEUS,
    SCENARIO,
    FailAt,
    argo_documents,
    argo_header,
    render_documents,
)
from harness.report.alertrules import parse_selector
from harness.spec.policy import load_policy


def argo_text(
    policy_file: Path,
    selectors: tuple[str, ...],
    *,
    window: str,
    count: int,
    prometheus: str | None,
    image: str | None,
    scenario: str | None,
    fail_at: FailAt,
) -> str:
    """The policy's ConfigMap and the Job and Prometheus AnalysisTemplates, as one YAML stream."""
    policy = load_policy(policy_file)
    docs, skipped = argo_documents(
        policy, policy_file.read_text(encoding="utf-8"), selector=parse_selector(selectors),
        window=window, count=count, prometheus=prometheus or PROMETHEUS, image=image or IMAGE,
        scenario=scenario or SCENARIO, fail_at=fail_at,
    )  # fmt: skip
    return render_documents(argo_header(policy, fail_at), docs, skipped)
