"""summary.md: the verdict as GitHub-flavoured Markdown for a PR comment or a step summary."""

from __future__ import annotations

from harness.quantity import format_quantity
from harness.report.common import (
    alert_text,
    error_share,
    estimate_text,
    stat_label,
    target_text,
)
from harness.verdict import Classification, Decision, LatencyStats, Verdict

_DECISION_MARK = {
    Decision.PASS: "✅",
    Decision.WARN: "⚠️",
    Decision.FAIL: "❌",
    Decision.INCONCLUSIVE: "❔",
    Decision.INVALID: "⛔",
}
_VERDICT_MARK = {
    Classification.PASS: "✅ PASS",
    Classification.WARN: "⚠️ WARN",
    Classification.FAIL: "❌ FAIL",
    Classification.INCONCLUSIVE: "❔ INCONCLUSIVE",
}


def render_markdown(verdict: Verdict) -> str:
    """The whole summary.md: decision headline, objectives, run summary, error classes."""
    s = verdict.summary
    lines = [f"## {_DECISION_MARK[verdict.decision]} SLO verdict: {verdict.decision.value}", ""]
    lines.append(f"Policy `{verdict.policy}`.")
    if verdict.invalid_reason:
        lines.append(f"The run is invalid: {_cell(verdict.invalid_reason)}.")
    lines += [
        "",
        "### Objectives",
        "",
        "| objective | metric | estimate | target | alert | n | verdict | reason |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in verdict.objectives:
        name = r.name if r.critical else f"{r.name} (advisory)"
        cells = (
            name,
            stat_label(r),
            estimate_text(r),
            target_text(r),
            alert_text(r),
            str(r.n),
            _VERDICT_MARK[r.verdict],
            r.reason,
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += [
        "",
        "### Run summary",
        "",
        "| requests | errors | duration | request rate | output tokens | goodput |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {s.requests} | {s.errors} ({error_share(s)}) | {format_quantity(s.duration_s, 's')}"
        f" | {format_quantity(s.request_rate, '1/s')}"
        f" | {format_quantity(s.output_token_rate, '1/s')}"
        f" | {format_quantity(s.goodput, '1/s')} |",
        "",
        "| latency | mean | p50 | p90 | p99 | n |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, stats in (
        ("TTFT", s.ttft_s),
        ("TPOT", s.tpot_s),
        ("ITL", s.itl_s),
        ("E2EL", s.e2el_s),
        ("schedule lag", s.schedule_lag_s),
    ):
        lines.append(_latency_row(label, stats))
    sizes = [
        (label, cal)
        for label, cal in (
            ("prompt tokens / planned words", s.prompt_vs_planned),
            ("output tokens / max_tokens", s.output_vs_asked),
        )
        if cal is not None and cal.get("n")
    ]
    if sizes:
        lines += [
            "",
            "| sizes (server usage vs asked) | mean | p5 | p95 | n |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, cal in sizes:
            ratios = " | ".join(f"{cal[k]:.3f}" for k in ("mean_ratio", "p5_ratio", "p95_ratio"))
            lines.append(f"| {label} | {ratios} | {cal['n']} |")
    if verdict.checks:
        lines += [
            "",
            "### Client against server",
            "",
            "| check | agrees | detail |",
            "|---|---|---|",
        ]
        for c in verdict.checks:
            mark = {True: "✅ yes", False: "⚠️ no", None: "— no data"}[c.ok]
            lines.append(f"| {_cell(c.name)} | {mark} | {_cell(c.detail)} |")
    if s.error_classes:
        lines += ["", "### Errors", "", "| class | count |", "|---|---:|"]
        lines += [f"| {_cell(name)} | {count} |" for name, count in s.error_classes.items()]
    return "\n".join(lines) + "\n"


def _latency_row(label: str, stats: LatencyStats) -> str:
    values = (stats.mean, stats.p50, stats.p90, stats.p99)
    return f"| {label} | " + " | ".join(format_quantity(v, "s") for v in values) + f" | {stats.n} |"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, one line."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
