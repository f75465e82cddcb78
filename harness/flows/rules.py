"""`harness slo rules POLICY`: the Prometheus alerting rules of a policy's alert tiers."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.report.alertrules import parse_selector, render_rules, rules_for, skipped_objectives
from harness.spec.policy import load_policy


def rules_text(policy_file: Path, selectors: tuple[str, ...], window: str, for_: str) -> str:
    """The rule file for the policy, with a header naming the objectives left out."""
    policy = load_policy(policy_file)
    doc = rules_for(policy, selector=parse_selector(selectors), window=window, for_=for_)
    return render_rules(doc, skipped_objectives(policy))


def write_rules(out: Path, text: str) -> None:
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {out}: {exc.strerror or exc}") from None
