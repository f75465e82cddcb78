"""`harness report`: one self-contained HTML file for a run, a comparison, a capacity search or
a tuning study, told apart by the files the folder holds.

``write_report`` is what the commands call after writing their own results (`run`,
`evaluate --baseline`, `capacity`, and `tune` after study.json); ``write_report_quietly``
wraps it for them, since a report that fails to render must never change a verdict's exit
code: it says so in one line and the results stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from harness.errors import UsageError
from harness.records.run_dir import MANIFEST_NAME
from harness.report.comparison import COMPARISON_JSON
from harness.report.files import write_atomic
from harness.report.page import Page
from harness.report.plots_capacity import capacity_page, capacity_path
from harness.report.plots_comparison import comparison_page
from harness.report.plots_run import load_run, run_sections
from harness.report.plots_study import study_page, study_path

HTML_REPORT = "report.html"
ReportKind = Literal["run", "comparison", "capacity", "study"]
#: The line summary.md (or comparison.md) gets once the report is written beside it.
REPORT_LINK = f"Interactive report: [{HTML_REPORT}]({HTML_REPORT})"


def report_kind(folder: Path) -> ReportKind | None:
    """What a folder holds, by its files; None when it is none of the four. A study or a
    capacity search is named by its own document first: its folder also holds run folders,
    never a manifest of its own."""
    if study_path(folder).is_file():
        return "study"
    if capacity_path(folder).is_file():
        return "capacity"
    if (folder / MANIFEST_NAME).is_file():
        return "comparison" if (folder / COMPARISON_JSON).is_file() else "run"
    return None


def render_report(folder: Path, kind: ReportKind) -> str:
    """The report's HTML; a damaged results file raises ResultsError naming it."""
    if kind == "study":
        page = study_page(folder)
    elif kind == "capacity":
        page = capacity_page(folder)
    elif kind == "comparison":
        page = comparison_page(folder)
    else:
        run = load_run(folder)
        page = Page(f"Run {run.manifest.run_id}: "
                    f"{(run.verdict or {}).get('decision', 'not judged')}")  # fmt: skip
        run_sections(page, run)
    return page.render()


def write_report(folder: Path, out: Path | None = None) -> Path:
    """Write the folder's report (default ``folder/report.html``, written whole by rename) and
    return its path. A folder of none of the four kinds is a UsageError (exit 2)."""
    kind = report_kind(folder)
    if kind is None:
        raise UsageError(
            f"{folder}: not a run, comparison, capacity or study folder (no {MANIFEST_NAME}, "
            f"{capacity_path(folder).name} or {study_path(folder).name})"
        )
    path = out if out is not None else folder / HTML_REPORT
    write_atomic(path, render_report(folder, kind))
    return path


def write_report_quietly(
    folder: Path, warn: Callable[[str], None], link_from: Iterable[Path] = ()
) -> Path | None:
    """``write_report`` for a command that has already written its results: a failure is one
    warning line, never an exception; on success each Markdown file in ``link_from`` gets a
    link to the report (once)."""
    try:
        path = write_report(folder)
        for markdown in link_from:
            link_report(markdown)
    except Exception as exc:  # a report is a convenience: never a reason to change the exit code
        warn(f"warning: {HTML_REPORT} not written ({type(exc).__name__}: {str(exc)[:200]})")
        return None
    return path


def link_report(markdown: Path) -> None:
    """Append the report's link to a Markdown file beside it, unless it has it already."""
    if not markdown.is_file():
        return
    text = markdown.read_text(encoding="utf-8")
    if f"({HTML_REPORT})" in text:
        return
    write_atomic(markdown, text.rstrip("\n") + f"\n\n{REPORT_LINK}\n")
