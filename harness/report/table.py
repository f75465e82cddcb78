"""The verdict as a terminal table (rich): what `harness run` and `harness evaluate` print."""

from __future__ import annotations

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.judge.verdict import Classification, Decision, Verdict
from harness.report.common import (
    alert_text,
    fallback_note,
    stat_label,
    summary_line,
    target_text,
    token_source_note,
)
from harness.spec.quantity import format_quantity

CLASSIFICATION_STYLE = {
    Classification.PASS: "bold green",
    Classification.WARN: "bold yellow",
    Classification.FAIL: "bold red",
    Classification.INCONCLUSIVE: "bold magenta",
}
DECISION_STYLE = {
    Decision.PASS: "bold green",
    Decision.WARN: "bold yellow",
    Decision.FAIL: "bold red",
    Decision.INCONCLUSIVE: "bold magenta",
    Decision.INVALID: "bold red",
}


def verdict_renderable(verdict: Verdict) -> RenderableType:
    """The objectives table, the run's one-line summary and the decision, as one renderable.

    Cells are Text, never markup strings, so a reason with brackets prints as written.
    Reasons for objectives that did not pass follow the table.
    """
    table = Table(
        title=f"SLO policy {verdict.policy}", title_justify="left", expand=False, box=box.SIMPLE
    )
    table.add_column("objective", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("estimate", justify="right", no_wrap=True)
    table.add_column("target", justify="right", no_wrap=True)
    table.add_column("alert", justify="right", no_wrap=True)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    notes: list[Text] = []
    for result in verdict.objectives:
        if result.verdict is not Classification.PASS:
            note = Text(f"{result.name}: ", style="bold")
            note.append(result.reason)
            notes.append(note)
        name = Text(result.name)
        if not result.critical:
            name.append(" (advisory)", style="dim")
        table.add_row(
            name,
            Text(stat_label(result)),
            Text(format_quantity(result.estimate, result.unit)),  # bounds: in the reasons
            Text(target_text(result)),
            Text(alert_text(result)),
            Text(str(result.n)),
            Text(result.verdict.value, style=CLASSIFICATION_STYLE[result.verdict]),
        )
    for check in verdict.checks:
        if check.ok is False:
            note = Text(f"client vs server, {check.name}: ", style="bold yellow")
            note.append(check.detail)
            notes.append(note)
    served_note = fallback_note(verdict.summary)
    if served_note:
        notes.append(Text(served_note, style="bold yellow"))
    token_note = token_source_note(verdict.summary)
    if token_note:
        notes.append(Text(token_note, style="dim"))
    if verdict.interrupted:
        notes.append(Text(f"the run was cut short: {verdict.interrupted}", style="bold magenta"))
    collected = collectors_line(verdict)
    if collected:
        notes.append(Text(collected, style="dim"))
    decision = Text("decision: ")
    decision.append(verdict.decision.value, style=DECISION_STYLE[verdict.decision])
    if verdict.invalid_reason:
        decision.append(f" ({verdict.invalid_reason})")
    # Reasons go under the table, one line each for what did not pass: a reason column
    # would squeeze every other column on an 80-column CI log.
    return Group(table, *notes, Text(summary_line(verdict.summary)), decision)


def print_verdict(verdict: Verdict, console: Console) -> None:
    """Print the verdict table to console (the caller chooses stdout, stderr or a recording)."""
    console.print(verdict_renderable(verdict))


def collectors_line(verdict: Verdict) -> str:
    """One line on what the collectors read and how the client and server compared."""
    c = verdict.collected
    if not c:
        return ""
    servers = (
        ", ".join(
            f"{s.get('kind') or s.get('name')} ({s.get('mode')}"
            + (f", failed: {failed}" if (failed := (s.get("problems") or {}).get("*")) else "")
            + ")"
            for s in c.get("servers", [])
        )
        or "none"
    )
    gpu = c.get("gpu") or {}
    reason = str(gpu.get("reason") or "not sampled").removesuffix(": GPU metrics not collected")
    gpus = ", ".join(gpu.get("gpus") or []) if gpu.get("available") else f"none, {reason}"
    agree = sum(1 for ch in verdict.checks if ch.ok)
    judged = sum(1 for ch in verdict.checks if ch.ok is not None)
    checks = f"; checks (client vs server, steady state): {agree}/{judged} agree" if judged else ""
    return f"server metrics: {servers}; GPU: {gpus}{checks}"
