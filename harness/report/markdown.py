"""summary.md: the verdict as GitHub-flavoured Markdown for a PR comment or a step summary."""

from __future__ import annotations

from typing import Any

from harness.judge.verdict import Classification, Decision, LatencyStats, Verdict
from harness.report.common import (
    alert_text,
    error_share,
    estimate_text,
    fallback_note,
    stat_label,
    target_text,
    token_source_note,
)
from harness.spec.quantity import format_quantity

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
        lines.append(f"The run is invalid: {cell(verdict.invalid_reason)}.")
    if verdict.interrupted:
        lines.append(f"The run was cut short: {cell(verdict.interrupted)}.")
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
        lines.append("| " + " | ".join(cell(c) for c in cells) + " |")
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
    for note in (fallback_note(s), token_source_note(s)):
        if note:
            lines[-3:-3] = ["", f"Note: {cell(note)}."]
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
            lines.append(f"| {cell(c.name)} | {mark} | {cell(c.detail)} |")
    lines += _server_section(verdict)
    if s.error_classes:
        lines += ["", "### Errors", "", "| class | count |", "|---|---:|"]
        lines += [f"| {cell(name)} | {count} |" for name, count in s.error_classes.items()]
    return "\n".join(lines) + "\n"


def _server_section(verdict: Verdict) -> list[str]:
    """The server's own view of the measured window: buckets, exact shares, counters."""
    c = verdict.collected or {}
    failed = [
        f"Server metrics from {s.get('name')} could not be read: {cell(str(why))}."
        for s in c.get("servers") or []
        if (why := (s.get("problems") or {}).get("*"))
    ]
    hists: dict[str, Any] = c.get("histograms") or {}
    counters: dict[str, dict[str, float]] = c.get("counters") or {}
    if not hists and not counters:
        return ["", *failed] if failed else []
    lines = ["", "### Server side (measured window)", "", *(f"{f}\n" for f in failed)]
    if hists:
        lines += [
            "| histogram | n | mean | p50 in | p99 in | share under the policy's bounds |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, h in hists.items():
            shares = ", ".join(
                f"≤ {format_quantity(float(b), 's')}: {v['share'] * 100:.4g} %"
                + ("" if v["exact"] else " (interpolated)")
                for b, v in (h.get("share_under") or {}).items()
            )
            lines.append(
                f"| {name} | {h['n']:.0f} | {format_quantity(h.get('mean'), 's')} | "
                f"{_bucket(h.get('p50_bucket'))} | {_bucket(h.get('p99_bucket'))} | "
                f"{shares or '—'} |"
            )
    if counters:
        parts = []
        for name, by in counters.items():
            total = sum(by.values())
            split = ", ".join(f"{k.split('=', 1)[-1]} {v:.0f}" for k, v in by.items() if k and v)
            parts.append(f"{name} {total:.0f}" + (f" ({split})" if split else ""))
        lines += ["", "Counted by the servers: " + "; ".join(parts) + "."]
    return lines


def _bucket(bounds: list[float] | None) -> str:
    if not bounds:
        return "—"
    return f"{format_quantity(bounds[0], 's')}–{format_quantity(bounds[1], 's')}"


def _latency_row(label: str, stats: LatencyStats) -> str:
    values = (stats.mean, stats.p50, stats.p90, stats.p99)
    return f"| {label} | " + " | ".join(format_quantity(v, "s") for v in values) + f" | {stats.n} |"


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, one line."""
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")
