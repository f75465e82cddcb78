"""The canary-versus-baseline comparison as a terminal table, comparison.md and comparison.json.

Every rendering shows the same cells (``comparison_rows``), so the terminal and the Markdown
never disagree on a digit.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from harness.canary.compare import CanaryDecision, Comparison, MetricComparison, ShiftClass
from harness.report.files import write_atomic
from harness.report.markdown import cell
from harness.spec.quantity import format_quantity

COMPARISON_JSON = "comparison.json"
COMPARISON_MD = "comparison.md"

#: The terminal's columns (the Markdown adds ``allowed`` and ``p``): 120 columns of a CI log.
_COLUMNS = (
    "metric",
    "n",
    "canary",
    "baseline",
    "shift [interval]",
    "relative",
    "p99 diff [interval]",
    "class",
)
MARKDOWN_COLUMNS = (*_COLUMNS[:6], "allowed", _COLUMNS[6], "p", _COLUMNS[7])
_DECISION_STYLE = {
    CanaryDecision.PROMOTE: "bold green",
    CanaryDecision.HOLD: "bold magenta",
    CanaryDecision.ROLLBACK: "bold red",
}
_DECISION_MARK = {
    CanaryDecision.PROMOTE: "✅",
    CanaryDecision.HOLD: "❔",
    CanaryDecision.ROLLBACK: "❌",
}


def comparison_rows(comparison: Comparison) -> list[dict[str, str]]:
    """The display cells of each metric, by column name (``MARKDOWN_COLUMNS``)."""
    return [_row(m) for m in comparison.metrics]


def comparison_renderable(comparison: Comparison) -> RenderableType:
    """The table, then the reasons for what did not pass, the notes, and the decision."""
    c = comparison
    title = f"Canary against baseline ({c.confidence * 100:g} % intervals"
    shares = {m.allowed for m in c.metrics}
    title += f", allowed change ±{shares.pop() * 100:g} %)" if len(shares) == 1 else ")"
    if c.labels:
        title += f": {c.labels.get('canary', '?')} vs {c.labels.get('baseline', '?')}"
    table = Table(title=title, title_justify="left", expand=False, box=box.SIMPLE, pad_edge=False)
    for name in _COLUMNS:
        # Text headers: "[interval]" is not markup. Only the metric name may wrap.
        left = name in ("metric", "class")
        table.add_column(
            Text(name),
            no_wrap=name != "metric",
            overflow="fold",
            justify="left" if left else "right",
        )
    for metric, row in zip(c.metrics, comparison_rows(c), strict=True):
        cells = [Text(row[name]) for name in _COLUMNS]
        cells[0].stylize("dim", len(metric.metric))  # " (advisory)"
        cells[-1].stylize(_class_style(metric))
        table.add_row(*cells)
    lines: list[Text] = []
    for m in c.metrics:
        if m.classification is not ShiftClass.PASS:
            note = Text(f"{m.metric}: ", style="bold")
            note.append(m.reason)
            lines.append(note)
    lines += [Text(f"note: {n}", style="yellow") for n in c.notes]
    lines += [Text(f"warning: {w}", style="yellow") for w in c.warnings]
    decision = Text("canary decision: ")
    decision.append(c.decision.value, style=_DECISION_STYLE[c.decision])
    decision.append(f" ({c.reason})")
    return Group(table, *lines, decision)


def print_comparison(comparison: Comparison, console: Console) -> None:
    console.print(comparison_renderable(comparison))


def render_comparison_markdown(comparison: Comparison) -> str:
    """comparison.md: headline decision, the table, reasons, notes and warnings."""
    c = comparison
    lines = [f"## {_DECISION_MARK[c.decision]} Canary against baseline: {c.decision.value}", ""]
    if c.labels:
        lines.append(
            f"Canary `{c.labels.get('canary', '?')}` against baseline "
            f"`{c.labels.get('baseline', '?')}`."
        )
    lines += [
        f"{cell(c.reason)}.",
        "",
        f"Shifts are canary − baseline: Hodges–Lehmann with its {c.confidence * 100:g} % "
        f"distribution-free interval (error rate: difference with Newcombe's interval), p99 "
        f"difference with a {c.resamples}-resample percentile bootstrap; p from Mann–Whitney U "
        "(error rate: Fisher's exact test). High/Low: the whole interval beyond ± allowed × "
        f"baseline; NoData: under {c.min_samples} samples a side.",
        "",
        "| " + " | ".join(MARKDOWN_COLUMNS) + " |",
        "|---|" + "---:|" * (len(MARKDOWN_COLUMNS) - 2) + "---|",
    ]
    for metric, row in zip(c.metrics, comparison_rows(c), strict=True):
        cells = [row[name] for name in MARKDOWN_COLUMNS]
        if metric.worse:
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cell(x) for x in cells) + " |")
    reasons = [f"- `{m.metric}`: {cell(m.reason)}" for m in c.metrics]
    lines += ["", "### Why", "", *reasons]
    subsampled = [f"- `{m.metric}`: {cell(n)}" for m in c.metrics for n in m.notes]
    if c.notes or subsampled:
        lines += ["", "### Notes", "", *(f"- {cell(n)}" for n in c.notes), *subsampled]
    if c.warnings:
        lines += ["", "### Warnings", "", *(f"- ⚠️ {cell(w)}" for w in c.warnings)]
    return "\n".join(lines) + "\n"


def write_comparison(
    run_dir: Path, comparison: Comparison, baseline_dir: Path | None = None
) -> None:
    """comparison.json and comparison.md into run_dir, each written whole or not at all.

    ``baseline_dir`` is kept relative to run_dir (it still holds when both folders move
    together, as results copied off a CI runner do), for the HTML report's overlays."""
    doc = comparison.to_json_dict()
    if baseline_dir is not None:
        doc["baseline_dir"] = os.path.relpath(baseline_dir.resolve(), run_dir.resolve())
    text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
    write_atomic(run_dir / COMPARISON_JSON, text)
    write_atomic(run_dir / COMPARISON_MD, render_comparison_markdown(comparison))


def comparison_from_json(doc: Mapping[str, Any]) -> Comparison:
    """comparison.json read back into the type it was written from, so the HTML report shows
    the cells comparison.md shows (an open interval side, written as null, reads as ±∞)."""
    metrics = tuple(
        MetricComparison(
            metric=str(m["metric"]), unit=str(m["unit"]),
            better="higher" if m.get("better") == "higher" else "lower",
            critical=bool(m["critical"]), test=str(m["test"]), n_canary=int(m["n_canary"]),
            n_baseline=int(m["n_baseline"]), canary=m.get("canary"), baseline=m.get("baseline"),
            shift=m.get("shift"), interval=_interval(m.get("interval")),
            relative_shift=m.get("relative_shift"), allowed=float(m["allowed"]),
            margin=m.get("margin"), p_value=m.get("p_value"), p99_canary=m.get("p99_canary"),
            p99_baseline=m.get("p99_baseline"), p99_diff=m.get("p99_diff"),
            p99_interval=_interval(m.get("p99_interval")),
            classification=ShiftClass(m["classification"]), reason=str(m.get("reason", "")),
            notes=tuple(str(n) for n in m.get("notes") or ()),
        )
        for m in doc["metrics"]
    )  # fmt: skip
    labels = {role: str(doc[f"{role}_run"]) for role in ("canary", "baseline")
              if f"{role}_run" in doc}  # fmt: skip
    return Comparison(
        decision=CanaryDecision(doc["decision"]), reason=str(doc.get("reason", "")),
        metrics=metrics, notes=tuple(doc.get("notes") or ()),
        warnings=tuple(doc.get("warnings") or ()), confidence=float(doc["confidence"]),
        min_samples=int(doc["min_samples"]), resamples=int(doc["resamples"]),
        seed=int(doc.get("seed", 0)), labels=labels,
    )  # fmt: skip


def _interval(pair: Any) -> tuple[float, float] | None:
    if not isinstance(pair, list) or len(pair) != 2:
        return None
    low, high = pair
    return (-math.inf if low is None else float(low), math.inf if high is None else float(high))


def span(value: float | None, interval: tuple[float, float] | None, unit: str) -> str:
    """A signed change and its interval in one unit and one precision: "+5.5 [+5.1, +6.0] ms".

    Three significant digits for the largest of the three, the same decimals for the others.
    """
    if value is None:
        return "—"
    values = [value, *(interval or ())]
    largest = max(abs(v) for v in values)
    scale, suffix = _scale(largest, unit)
    scaled = largest * scale
    digits = 2 - math.floor(math.log10(scaled)) if scaled > 0 else 0
    decimals = min(max(digits, 0), 6)
    text = f"{value * scale:+.{decimals}f}"
    if interval is not None:
        text += f" [{interval[0] * scale:+.{decimals}f}, {interval[1] * scale:+.{decimals}f}]"
    return text + suffix


def _scale(largest: float, unit: str) -> tuple[float, str]:
    """The factor and suffix of a change's unit, as format_quantity would pick them."""
    if unit == "s":
        return (1e3, " ms") if largest < 1 else (1.0, " s")
    if unit == "ratio":
        return 100.0, " %"
    return 1.0, "" if unit in ("count", "") else f" {unit}"


def _row(m: MetricComparison) -> dict[str, str]:
    return {
        "metric": m.metric if m.critical else f"{m.metric} (advisory)",
        "n": f"{m.n_canary}/{m.n_baseline}",
        "canary": format_quantity(m.canary, m.unit),
        "baseline": format_quantity(m.baseline, m.unit),
        "shift [interval]": span(m.shift, m.interval, m.unit),
        "relative": "—" if m.relative_shift is None else f"{m.relative_shift * 100:+.1f} %",
        "allowed": f"±{m.allowed * 100:g} %",
        "p99 diff [interval]": span(m.p99_diff, m.p99_interval, m.unit),
        "p": "—" if m.p_value is None else f"{m.p_value:.2g}",
        "class": m.classification.value,
    }


def _class_style(m: MetricComparison) -> str:
    if m.worse:
        return "bold red"
    if m.classification is ShiftClass.NODATA:
        return "bold magenta"
    return "bold green"
