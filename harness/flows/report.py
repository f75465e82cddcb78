"""`harness report PATH [--out FILE]`: the self-contained HTML report of a result folder (a
run, a canary comparison, a capacity search or a tuning study; ``report.html``)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from harness.errors import ExitCode, UsageError
from harness.report.html import write_report


def report_and_print(path: Path, out: Path | None, console: Console) -> ExitCode:
    """The command: write the report and print where it is. A results file given instead of
    its folder (study.json, capacity.json, manifest.json) means its folder."""
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise UsageError(f"{path}: no such folder")
    written = write_report(folder, out)
    console.print(f"report: {written}", soft_wrap=True)
    return ExitCode.PASS
