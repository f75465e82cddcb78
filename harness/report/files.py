"""Writing the verdict files of a run folder: verdict.json, summary.md, junit.xml."""

from __future__ import annotations

import os
from pathlib import Path

from harness.judge.verdict import Verdict
from harness.report.junit import render_junit
from harness.report.markdown import render_markdown

VERDICT_FILE = "verdict.json"
SUMMARY_FILE = "summary.md"
JUNIT_FILE = "junit.xml"


def write_reports(run_dir: Path, verdict: Verdict) -> None:
    """Write the three files into run_dir (created if missing).

    Each file is written to a temporary name and renamed, so a CI step that reads
    verdict.json never sees half a document, even if the judge is killed meanwhile.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(run_dir / VERDICT_FILE, verdict.to_json())
    write_atomic(run_dir / SUMMARY_FILE, render_markdown(verdict))
    write_atomic(run_dir / JUNIT_FILE, render_junit(verdict))


def write_atomic(path: Path, text: str) -> None:
    """Write by rename, so a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
