"""`harness slo flagger POLICY`: the policy as Flagger MetricTemplates and a Canary analysis,
with a pre-rollout webhook to `harness webhook`."""

from __future__ import annotations

from pathlib import Path

from harness.flows.rules import write_rules as write_rules
from harness.report.adapters import (
    PROMETHEUS,
    FailAt,
    flagger_documents,
    flagger_header,
    render_documents,
)
from harness.report.alertrules import parse_selector
from harness.spec.policy import load_policy


def flagger_text(
    policy_file: Path,
    selectors: tuple[str, ...],
    *,
    target: str,
    namespace: str,
    window: str,
    prometheus: str | None,
    port: int,
    scenario: str | None,
    webhook_timeout: str,
    fail_at: FailAt,
) -> str:
    """The MetricTemplates and the Canary with their analysis, as one YAML stream."""
    policy = load_policy(policy_file)
    docs, skipped = flagger_documents(
        policy, target=target, namespace=namespace, selector=parse_selector(selectors),
        window=window, prometheus=prometheus or PROMETHEUS, port=port, scenario=scenario,
        webhook_timeout=webhook_timeout, fail_at=fail_at,
    )  # fmt: skip
    return render_documents(flagger_header(policy, fail_at), docs, skipped)
