"""A canary run compared with its baseline: the decision table of comparison.md, both runs'
latency CDFs on one plot per metric, and both runs' per-window TTFT p99.

The canary folder holds comparison.json; the baseline is found where comparison.json says
(relative to the canary, as `evaluate --baseline` writes it), else beside the canary by its
run name. Without the baseline's records the page still shows the decision table and says
why the overlays are missing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.canary.compare import Comparison, ShiftClass
from harness.errors import ResultsError
from harness.records.run_dir import MANIFEST_NAME
from harness.report.comparison import (
    COMPARISON_JSON,
    MARKDOWN_COLUMNS,
    comparison_from_json,
    comparison_rows,
)
from harness.report.page import Cell, Page, badge, num, raw
from harness.report.plots import CDF_LABELS, COLORS, window_length
from harness.report.plots_run import (
    RunData,
    cdf_figure,
    describe_run,
    load_run,
    run_sections,
    ttft_window_figure,
)

_NUMERIC = {"n", "canary", "baseline", "shift [interval]", "relative", "allowed",
            "p99 diff [interval]", "p"}  # fmt: skip


def read_comparison(folder: Path) -> tuple[Comparison, dict[str, Any]]:
    """comparison.json as the type it was written from, and as the document."""
    path = folder / COMPARISON_JSON
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return comparison_from_json(doc), doc
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable: {exc}") from None
    except (KeyError, TypeError, AttributeError) as exc:
        raise ResultsError(f"{path}: damaged ({type(exc).__name__}: {exc})") from None


def baseline_folder(folder: Path, doc: dict[str, Any]) -> tuple[Path | None, str]:
    """Where the baseline run is, or None and where it was looked for."""
    tried = []
    rel = doc.get("baseline_dir")
    if isinstance(rel, str) and rel:
        tried.append(folder / rel)
    name = doc.get("baseline_run")
    if isinstance(name, str) and name:
        tried.append(folder.parent / name)
    for path in tried:
        if (path / MANIFEST_NAME).is_file():
            return path, ""
    where = " or ".join(str(p) for p in tried) or "nowhere (comparison.json names no baseline)"
    return None, f"the baseline run is not at {where}"


def comparison_page(folder: Path) -> Page:
    """The comparison first, then the canary's own run report."""
    comparison, doc = read_comparison(folder)
    canary = load_run(folder)
    base_dir, missing = baseline_folder(folder, doc)
    baseline = load_run(base_dir) if base_dir is not None else None
    page = Page(f"Canary {canary.manifest.run_id} against baseline: {comparison.decision.value}")
    decision = comparison.decision
    page.heading("Canary against baseline", 1, badge(decision.value, big=True))
    page.text(f"{comparison.reason}.")
    labels = comparison.labels
    page.text(f"Canary {labels.get('canary', canary.manifest.run_id)} · baseline "
              f"{labels.get('baseline', '?')} · canary verdict "
              f"{(canary.verdict or {}).get('decision', 'not judged')}", "meta")  # fmt: skip
    page.text("Canary: " + describe_run(canary), "meta")
    if baseline is not None:
        page.text("Baseline: " + describe_run(baseline), "meta")
    decision_table(page, comparison)
    if baseline is None:
        page.text(f"No overlays: {missing}.", "note")
    else:
        overlays(page, canary, baseline)
    page.heading(f"The canary run: {canary.manifest.run_id}", 1,
                 badge(str((canary.verdict or {}).get("decision", "NOT JUDGED"))))  # fmt: skip
    run_sections(page, canary, header=False)
    return page


def decision_table(page: Page, comparison: Comparison) -> None:
    """comparison.md's table and its reasons, notes and warnings."""
    c = comparison
    page.heading("Per metric")
    page.text(f"Shifts are canary − baseline: Hodges–Lehmann with its {c.confidence * 100:g} % "
              f"interval (error rate: difference with Newcombe's interval); p99 difference with a "
              f"{c.resamples}-resample bootstrap; p from Mann–Whitney U (error rate: Fisher's "
              f"exact test); NoData under {c.min_samples} samples a side.", "note")  # fmt: skip
    rows = []
    for metric, row in zip(c.metrics, comparison_rows(c), strict=True):
        cells: list[Cell | str] = []
        for column in MARKDOWN_COLUMNS:
            if column == "class":
                like = (
                    "FAIL"
                    if metric.worse
                    else ("INCONCLUSIVE" if metric.classification is ShiftClass.NODATA else "PASS")
                )
                cells.append(raw(badge(metric.classification.value, like=like)))
            elif column in _NUMERIC:
                cells.append(num(row[column]))
            else:
                cells.append(row[column])
        rows.append(cells)
    page.table(MARKDOWN_COLUMNS, rows)
    for m in c.metrics:
        page.text(f"{m.metric}: {m.reason}", "note")
    for note in c.notes:
        page.text(f"Note: {note}", "note")
    for warning in c.warnings:
        page.text(f"Warning: {warning}")


def overlays(page: Page, canary: RunData, baseline: RunData) -> None:
    """Both runs' CDFs per latency metric compared (with the canary's objectives), and both
    runs' per-window TTFT p99."""
    page.heading("Canary and baseline overlaid")
    compared = ["ttft", "itl", "e2el"]
    absent = []
    for metric in compared:
        c, b = canary.metrics.samples.get(metric), baseline.metrics.samples.get(metric)
        if c is None or b is None or not c.size or not b.size:
            absent.append(CDF_LABELS[metric])
            continue
        curves = [(f"canary {canary.manifest.run_id}", c, COLORS["canary"]),
                  (f"baseline {baseline.manifest.run_id}", b, COLORS["baseline"])]  # fmt: skip
        page.figure(f"compare-cdf-{metric}",
                    cdf_figure(metric, curves, canary.objectives, canary.share_bounds))  # fmt: skip
    length = window_length(
        max(canary.end - canary.start, baseline.end - baseline.start),
        min(canary.metrics.attempted, baseline.metrics.attempted),
    )
    both = [("canary", canary, canary.windows(length)),
            ("baseline", baseline, baseline.windows(length))]  # fmt: skip
    fig = ttft_window_figure(both, ("p99",))
    if fig is not None:
        page.figure("compare-ttft-p99", fig)
    if absent:
        page.text(f"No overlay for {', '.join(absent)}: one of the runs has no samples.", "note")
