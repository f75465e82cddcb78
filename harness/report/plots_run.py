"""A run folder's report: the verdict, latency distributions and how the run went over time.

Every latency number here is computed from the raw per-request records with the judge's own
functions (``judge.analysis.analyse`` over the measured window, ``judge.steady.window_metrics``
per window, the same served rule and goodput bounds), so a CDF crosses the p99 line at the
value the verdict printed. Collector series come from samples.parquet over the measured
window, as the judge reads them; what was not collected is said, not drawn as an empty plot.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.compute as pc

from harness.capacity.probe import SERVER_STATE
from harness.collectors.stored import StoredCollection, read_collection, read_samples
from harness.errors import ResultsError
from harness.judge.analysis import (
    PERCENTILE_METHOD,
    RunMetrics,
    analyse,
    latency_stats,
    statistic,
)
from harness.judge.confidence import FloatArray
from harness.judge.served import ServedRule, expected_backends
from harness.judge.steady import window_metrics
from harness.judge.verdict import Classification, ObjectiveResult
from harness.records.log import read_table, without_aborted
from harness.records.run_dir import MANIFEST_NAME, Manifest, measured_window, read_manifest
from harness.report.common import alert_text, estimate_text, stat_label, target_text
from harness.report.files import VERDICT_FILE
from harness.report.page import Cell, Page, badge, label, num, raw
from harness.report.plots import (
    CDF_LABELS,
    COLORS,
    LATENCY_CDFS,
    bars,
    base_layout,
    bound_traces,
    bounds_on_cdf,
    cdf_points,
    finite,
    time_scale,
    window_length,
)
from harness.spec.config import validate
from harness.spec.metrics import METRICS
from harness.spec.policy import Policy
from harness.spec.quantity import format_quantity

#: Quantiles every CDF keeps exactly, besides those the objectives name.
_CDF_QUANTILES = (0.5, 0.9, 0.99)
#: A target or alert further than this many times the largest sample is named, not drawn.
_NEAR = 3.0
Window = tuple[float, float, RunMetrics]


@dataclass(frozen=True, slots=True)
class RunData:
    """One run folder read for the report: records, the judge's metrics, collector data."""

    folder: Path
    manifest: Manifest
    verdict: dict[str, Any] | None  # None: never judged (a killed run before `evaluate`)
    policy: Policy
    table: pa.Table  # the records, less those aborted in flight (as the judge reads them)
    start: float  # the measured window, monotonic seconds
    end: float
    metrics: RunMetrics
    served: ServedRule
    collection: StoredCollection | None
    series: pa.Table  # collector samples inside the measured window

    @property
    def objectives(self) -> list[dict[str, Any]]:
        return list((self.verdict or {}).get("objectives") or [])

    @property
    def share_bounds(self) -> dict[str, float]:
        """share_under objectives' bounds by name (verdict.json keeps only the share)."""
        return {o.name: o.bound for o in self.policy.objectives if o.bound is not None}

    def windows(self, length_s: float) -> list[Window]:
        """The measured window in windows of ``length_s``, each analysed as the judge does."""
        if not self.end > self.start:
            return []
        return window_metrics(self.table, self.start, self.end, length_s, self.policy.goodput,
                              self.served)  # fmt: skip


def load_run(folder: Path) -> RunData:
    """Read a run folder; a damaged file exits 2 naming it (``ResultsError``)."""
    manifest = read_manifest(folder)
    policy = validate(Policy, manifest.policy, f"{folder / MANIFEST_NAME} (policy)")
    table, _ = without_aborted(read_table(folder))
    start, end = measured_window(manifest, table)
    served = ServedRule.of(policy, expected_backends(manifest.scenario))
    metrics = analyse(table, start, end, policy.goodput, served)
    collection, series = read_collection(folder, manifest), _measured_series(folder, manifest)
    return RunData(folder, manifest, stored_verdict(folder), policy, table, start, end, metrics,
                   served, collection, series)  # fmt: skip


def stored_verdict(folder: Path) -> dict[str, Any] | None:
    """verdict.json as written (None when absent); a damaged one exits 2 naming it."""
    path = folder / VERDICT_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("objectives", []), list):
        raise ResultsError(f"{path}: not a harness verdict (expected a mapping with objectives)")
    return doc


def _measured_series(folder: Path, manifest: Manifest) -> pa.Table:
    """Collector samples inside the measured window, with ``x``: seconds from its start."""
    table, tl = read_samples(folder), manifest.timeline
    if tl is None or table.num_rows == 0:
        return table.slice(0, 0).append_column("x", pa.array([], pa.float64()))
    origin = tl.wall_start + (tl.measure_start - tl.t_start)
    x = pc.subtract(table["wall"], origin)
    inside = pc.and_(pc.greater_equal(x, 0.0), pc.less_equal(x, tl.measure_end - tl.measure_start))
    return table.append_column("x", x).filter(inside)


def objective_result(doc: Mapping[str, Any]) -> ObjectiveResult:
    """An objective of verdict.json back in the judge's type, so the report formats it with
    the functions the terminal and summary.md use (an open interval side reads as ∞)."""
    interval = doc.get("interval")
    pair = None
    if isinstance(interval, list) and len(interval) == 2:
        low, high = interval
        pair = (-math.inf if low is None else float(low), math.inf if high is None else float(high))
    target = doc.get("target")
    return ObjectiveResult(
        name=str(doc.get("name")), metric=str(doc.get("metric")), stat=str(doc.get("stat")),
        estimate=doc.get("estimate"), unit=str(doc.get("unit")), interval=pair,
        n=int(doc.get("n") or 0), verdict=Classification(doc.get("verdict", "INCONCLUSIVE")),
        reason=str(doc.get("reason", "")), critical=bool(doc.get("critical", True)),
        target=(float(target[0]), float(target[1])) if isinstance(target, list) else
        float(target or 0.0), alert=doc.get("alert"),
    )  # fmt: skip


def run_header(page: Page, run: RunData) -> None:
    """The run's name, its decision, what ran against what, and why a verdict is qualified."""
    decision = str(run.verdict["decision"]) if run.verdict else "NOT JUDGED"
    page.heading(f"Run {run.manifest.run_id}", 1, badge(decision, big=True))
    page.text(describe_run(run), "meta")
    qualifiers(page, run)


def qualifiers(page: Page, run: RunData) -> None:
    """What qualifies the verdict: none yet, an invalid or cut-short run, the run's notes."""
    verdict = run.verdict or {}
    if not run.verdict:
        page.text("No verdict.json: judge the run with `harness evaluate` first.")
    for key, said in (("invalid_reason", "The run is invalid: "), ("interrupted", "Cut short: ")):
        if verdict.get(key):
            page.text(said + str(verdict[key]))
    for note in run.manifest.notes:
        page.text(f"Note: {note}", "note")


def describe_run(run: RunData) -> str:
    """One line: scenario, policy, target, status, when, how many records."""
    m = run.manifest
    target = m.target or {}
    where = (
        "built-in simulator" if target.get("kind") == "simulator" else _safe_url(target.get("url"))
    )
    when = ""
    if m.timeline is not None:
        when = datetime.fromtimestamp(m.timeline.wall_start, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    policy = (run.verdict or {}).get("policy") or run.policy.name
    parts = [
        f"scenario {m.scenario.get('name', '?')}", f"policy {policy}",
        f"target {where} (model {target.get('model', '?')})", f"status {m.status}",
        when, f"{m.records} records",
    ]  # fmt: skip
    return " · ".join(p for p in parts if p)


def _safe_url(url: object) -> str:
    """A URL without credentials, query or fragment: scheme, host, port and path."""
    if not isinstance(url, str) or not url:
        return "?"
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # not a port number: leave it out rather than fail the report
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def objectives_table(page: Page, run: RunData) -> None:
    """Each objective: its estimate with the bounds the verdict rests on, target, alert, n."""
    if not run.objectives:
        return
    page.heading("Objectives")
    rows: list[list[Cell | str]] = []
    for doc in run.objectives:
        try:
            r = objective_result(doc)
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise ResultsError(f"{run.folder / VERDICT_FILE}: damaged objective ({exc})") from None
        name = r.name if r.critical else f"{r.name} (advisory)"
        rows.append([name, stat_label(r), num(estimate_text(r)), num(target_text(r)),
                     num(alert_text(r)), num(str(r.n)), raw(badge(r.verdict.value)),
                     Cell(r.reason, cls="reason")])  # fmt: skip
    page.table(("objective", "metric", "estimate [bounds]", "target", "alert", "n", "verdict",
                "reason"), rows)  # fmt: skip


def summary_table(page: Page, run: RunData) -> None:
    """Volume, rates and latency percentiles of the measured window, from the records."""
    m = run.metrics
    share = format_quantity(m.failed / m.attempted, "ratio") if m.attempted else "—"
    page.heading("Measured window")
    page.table(
        ("requests", "errors", "duration", "request rate", "output tokens", "goodput"),
        [[num(str(m.attempted)), num(f"{m.failed} ({share})"),
          num(format_quantity(m.duration_s, "s")),
          num(format_quantity(m.scalars.get("request_rate"), "1/s")),
          num(format_quantity(m.scalars.get("output_token_rate"), "1/s")),
          num(format_quantity(m.scalars.get("goodput"), "1/s"))]],
    )  # fmt: skip
    rows: list[list[Cell | str]] = []
    for metric in ("ttft", "tpot", "itl", "e2el"):
        s = latency_stats(m.samples.get(metric))
        values = (s.mean, s.p50, s.p90, s.p99)
        rows.append([CDF_LABELS[metric], *(num(format_quantity(v, "s")) for v in values),
                     num(str(s.n))])  # fmt: skip
    page.table(("latency", "mean", "p50", "p90", "p99", "n"), rows)
    if m.error_classes:
        page.text("Errors by class: " + ", ".join(f"{k} {v}" for k, v in m.error_classes.items()))


def cdf_metrics(run: RunData) -> list[str]:
    """TTFT, ITL, E2EL, and any other latency an objective names, in that order."""
    named = [str(o.get("metric")) for o in run.objectives]
    extra = [n for n in dict.fromkeys(named) if n in CDF_LABELS and n not in LATENCY_CDFS]
    return [*LATENCY_CDFS, *extra]


def latency_sections(page: Page, run: RunData) -> None:
    """CDFs with the objectives drawn on them, then TTFT and ITL histograms."""
    page.heading("Latency distributions (measured window, successful requests)")
    absent = []
    for metric in cdf_metrics(run):
        samples = run.metrics.samples.get(metric)
        if samples is None or samples.size == 0:
            absent.append(CDF_LABELS[metric])
            continue
        fig = cdf_figure(metric, [("CDF", samples, COLORS["main"])], run.objectives,
                         run.share_bounds)  # fmt: skip
        page.figure(f"cdf-{metric}", fig)
    for metric in ("ttft", "itl"):
        samples = run.metrics.samples.get(metric)
        if samples is not None and samples.size:
            page.figure(f"hist-{metric}", histogram_figure(metric, samples))
    if absent:
        page.text(f"No samples for {', '.join(absent)} (a non-streaming run has no TTFT or ITL;"
                  " a run without successes has none at all).", "note")  # fmt: skip


def cdf_figure(
    metric: str,
    curves: Sequence[tuple[str, FloatArray, str]],
    objectives: Sequence[Mapping[str, Any]],
    share_bounds: Mapping[str, float],
) -> go.Figure:
    """The CDF of ``metric`` for each (name, samples, colour), with the objectives' targets and
    alerts as corners and the estimate each objective was judged on as a point."""
    bounds = bounds_on_cdf(objectives, metric, share_bounds)
    qs = {b.y for b in bounds if b.y is not None} | set(_CDF_QUANTILES)
    lo = min(float(np.min(s)) for _, s, _ in curves)
    hi = max(float(np.max(s)) for _, s, _ in curves)
    near = [b for b in bounds if b.x <= _NEAR * hi]  # far ones would squash the curve
    top = max([hi, *(b.x for b in near)])
    scale, unit = time_scale(top)
    p1 = min(float(np.percentile(s, 1.0)) for _, s, _ in curves)
    log = p1 > 0 and top / p1 > 30  # a long tail: the body stays readable
    fig = go.Figure()
    for name, samples, colour in curves:
        x, y = cdf_points(samples, qs)
        fig.add_trace(go.Scatter(
            x=x * scale, y=y, mode="lines", name=f"{label(name)} (n={samples.size:,})",
            line={"color": colour, "width": 2},
            hovertemplate=f"%{{x:.4g}} {unit}<br>CDF %{{y:.4f}}<extra>{label(name)}</extra>",
        ))  # fmt: skip
    if len(curves) == 1:
        marks = sorted(qs)
        xs = np.percentile(curves[0][1], [q * 100 for q in marks], method=PERCENTILE_METHOD)
        fig.add_trace(go.Scatter(
            x=xs * scale, y=marks, mode="markers", name="percentiles",
            marker={"color": COLORS["estimate"], "size": 7},
            hovertemplate=f"p%{{customdata}}: %{{x:.4g}} {unit}<extra></extra>",
            customdata=[f"{q * 100:g}" for q in marks],
        ))  # fmt: skip
    far = [b for b in bounds if b not in near]
    title = f"{CDF_LABELS[metric]} CDF"
    if far:
        said = "; ".join(b.said() for b in far)
        title += f"<br><sup>{label('beyond the axis: ' + said)}</sup>"
    layout = base_layout(title, f"{CDF_LABELS[metric]} ({unit})", "CDF")
    layout["yaxis"]["range"] = [0, 1.02]
    if far:
        layout["margin"]["t"] = 56
    if log:
        left = max(lo, p1 / 2) * scale
        layout["xaxis"] |= {
            "type": "log",
            "range": [math.log10(left), math.log10(top * scale * 1.1)],
        }
    else:
        pad = max((top - lo) * 0.04, top * 0.01, 1e-9)
        left = (lo - pad) * scale
        layout["xaxis"]["range"] = [left, (top + pad) * scale]
    for trace in bound_traces(near, scale, left):
        fig.add_trace(trace)
    fig.update_layout(layout)
    return fig


def histogram_figure(metric: str, samples: FloatArray) -> go.Figure:
    """Counts per bin up to the 99.5th percentile; the samples past it are counted in the title."""
    b = bars(samples)
    scale, unit = time_scale(b.upper)
    fig = go.Figure(go.Bar(
        x=b.centers * scale, y=b.counts, width=b.widths * scale, name=CDF_LABELS[metric],
        marker={"color": COLORS["main"]},
        hovertemplate=f"%{{x:.4g}} {unit}: %{{y}} samples<extra></extra>",
    ))  # fmt: skip
    title = f"{CDF_LABELS[metric]} histogram ({samples.size:,} samples"
    title += f"; {b.beyond:,} above {b.upper * scale:.4g} {unit} not shown)" if b.beyond else ")"
    layout = base_layout(title, f"{CDF_LABELS[metric]} ({unit})", "samples")
    layout["bargap"] = 0.02
    fig.update_layout(layout)
    return fig


def time_sections(page: Page, run: RunData) -> None:
    """Per-window request rates, TTFT percentiles and errors over the measured window."""
    windows = run.windows(window_length(run.end - run.start, run.metrics.attempted))
    if not windows:
        page.text("No measured window: no time series.", "note")
        return
    length = windows[0][1] - windows[0][0]
    page.heading(f"Over time (windows of {length:g} s from the start of the measured window)")
    page.figure("rate", rate_figure(run, windows))
    ttft = ttft_window_figure([("", run, windows)], ("p50", "p99"))
    if ttft is not None:
        page.figure("ttft-window", ttft)
    errors = error_figure(run, windows)
    if errors is None:
        page.text("No request failed in the measured window.", "note")
    else:
        page.figure("errors-window", errors)


def _measured_rows(run: RunData) -> pa.Table:
    phase = pc.fill_null(pc.cast(run.table["phase"], pa.string()), "")
    return run.table.filter(pc.equal(phase, "measure"))


def _column(table: pa.Table, name: str) -> FloatArray:
    values = pc.fill_null(pc.cast(table[name], pa.float64()), math.nan)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def rate_figure(run: RunData, windows: Sequence[Window]) -> go.Figure:
    """Requests per second per window: intended (open loop), sent, and completed successfully
    (by when they ended); a gap between intended and sent is the load generator falling behind,
    one between sent and completed is the target falling behind."""
    edges = np.array([windows[0][0], *(hi for _, hi, _ in windows)])
    widths = np.diff(edges)
    mids = (edges[:-1] + edges[1:]) / 2 - run.start
    rows = _measured_rows(run)
    ok = pc.fill_null(pc.equal(pc.fill_null(pc.cast(rows["error"], pa.string()), ""), ""), False)
    series = [("intended", _column(rows, "t_intended"), COLORS["muted"], "dot"),
              ("sent", _column(rows, "t_sent"), COLORS["main"], "solid"),
              ("completed", _column(rows.filter(ok), "t_done"), COLORS["third"],
               "solid")]  # fmt: skip
    fig = go.Figure()
    for name, times, colour, dash in series:
        times = times[np.isfinite(times)]
        if not times.size:
            continue  # closed loop: nothing intended
        counts, _ = np.histogram(times, bins=edges)
        fig.add_trace(go.Scatter(x=mids, y=counts / widths, mode="lines+markers", name=name,
                                 line={"color": colour, "dash": dash},
                                 hovertemplate="%{x:.1f} s: %{y:.3g} req/s<extra>" + name +
                                 "</extra>"))  # fmt: skip
    layout = base_layout("Request rate per window", "seconds", "requests/s")
    layout["yaxis"]["rangemode"] = "tozero"  # noise around a steady rate is not a trend
    fig.update_layout(layout)
    return fig


def ttft_window_figure(
    runs: Sequence[tuple[str, RunData, Sequence[Window]]], stats: Sequence[str]
) -> go.Figure | None:
    """TTFT percentiles per window of each run, with the TTFT objectives' targets at those
    percentiles; None when no window has a TTFT."""
    colours = (COLORS["main"], COLORS["baseline"], COLORS["second"])
    lines = []
    for i, (name, run, windows) in enumerate(runs):
        mids = [(lo + hi) / 2 - run.start for lo, hi, _ in windows]
        for stat in stats:
            values = [_stat(m.samples.get("ttft"), stat) for _, _, m in windows]
            lines.append((label(f"{name} {stat}".strip()), mids, values, colours[i % 3], stat))
    tops = [v for _, _, values, _, _ in lines for v in finite(values)]
    if not tops:
        return None
    targets = [(str(o["name"]), float(o["target"]), str(o["stat"])) for o in runs[0][1].objectives
               if o.get("metric") == "ttft" and o.get("stat") in stats
               and isinstance(o.get("target"), int | float)]  # fmt: skip
    scale, unit = time_scale(max(tops + [t for _, t, _ in targets]))
    fig = go.Figure()
    for name, mids, values, colour, stat in lines:
        fig.add_trace(go.Scatter(
            x=mids, y=[None if v is None else v * scale for v in values], mode="lines+markers",
            name=name, line={"color": colour, "dash": "solid" if stat == stats[-1] else "dot"},
            hovertemplate=f"%{{x:.1f}} s: %{{y:.4g}} {unit}<extra>{name}</extra>",
        ))  # fmt: skip
    for name, target, stat in targets:
        fig.add_hline(y=target * scale, line={"color": COLORS["target"], "dash": "dash"},
                      annotation_text=label(f"{name} target ({stat})"),
                      annotation_position="top left")  # fmt: skip
    title = "TTFT " + " and ".join(stats) + " per window"
    fig.update_layout(base_layout(title, "seconds", f"TTFT ({unit})"))
    return fig


def _stat(samples: FloatArray | None, stat: str) -> float | None:
    return statistic(samples, stat) if samples is not None and samples.size else None


def error_figure(run: RunData, windows: Sequence[Window]) -> go.Figure | None:
    """Failed requests per window (by when they were sent), stacked by error class; None when
    nothing failed."""
    classes = list(run.metrics.error_classes)
    if not classes:
        return None
    mids = [(lo + hi) / 2 - run.start for lo, hi, _ in windows]
    fig = go.Figure()
    for name in classes:
        fig.add_trace(go.Bar(x=mids, y=[m.error_classes.get(name, 0) for _, _, m in windows],
                             name=label(name), hovertemplate="%{x:.1f} s: %{y}<extra>" +
                             label(name) + "</extra>"))  # fmt: skip
    layout = base_layout("Errors per window", "seconds", "failed requests")
    layout["barmode"] = "stack"
    fig.update_layout(layout)
    return fig


#: Collector figures: name, title, metrics drawn together, y-axis title, scale.
_SERVER_FIGURES = (
    ("requests-waiting", "Requests waiting and running (server)",
     ("server.queue_waiting", "server.requests_running"), "requests", 1.0),
    ("kv-cache", "KV-cache usage (server)", ("server.kv_cache_usage",), "%", 100.0),
    ("gpu-utilization", "GPU utilization", ("gpu.utilization",), "%", 100.0),
    ("gpu-power", "GPU power", ("gpu.power",), "W", 1.0),
)  # fmt: skip


def server_sections(page: Page, run: RunData) -> None:
    """The server's and GPUs' gauges over the measured window, and a line on what is missing."""
    page.heading("Server and GPU (collectors, measured window)")
    metrics = run.series["metric"].to_pylist() if run.series.num_rows else []
    present = set(metrics)
    for name, title, wanted, y_title, scale in _SERVER_FIGURES:
        if present & set(wanted):
            page.figure(name, series_figure(run.series, title, wanted, y_title, scale))
    missing = [m for m in SERVER_STATE if m not in present]
    if not missing:
        return
    if run.collection is None:
        page.text("Not collected: the collectors did not run (no server.json), so there are no "
                  "server or GPU series.", "note")  # fmt: skip
        return
    by_reason: dict[str, list[str]] = {}
    for metric in missing:
        why = run.collection.missing.get(metric) or "no samples in the measured window"
        by_reason.setdefault(why, []).append(SERVER_STATE[metric])
    said = "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())
    page.text(f"Not collected: {said}.", "note")


def series_figure(
    series: pa.Table, title: str, metrics: Sequence[str], y_title: str, scale: float
) -> go.Figure:
    """One line per (metric, source, series) over seconds from the measured window's start."""
    fig = go.Figure()
    for metric in metrics:
        rows = series.filter(pc.equal(series["metric"], metric))
        keys = sorted(set(zip(rows["source"].to_pylist(), rows["series"].to_pylist(), strict=True)))
        for source, key in keys:
            picked = rows.filter(pc.and_(pc.equal(rows["source"], source),
                                         pc.equal(rows["series"], key)))  # fmt: skip
            order = np.argsort(_column(picked, "x"))
            name = SERVER_STATE.get(metric, METRICS[metric].description if metric in METRICS
                                    else metric)  # fmt: skip
            if len(keys) > 1:
                name += f" ({source}{' ' + key if key else ''})"
            fig.add_trace(go.Scatter(
                x=_column(picked, "x")[order], y=_column(picked, "value")[order] * scale,
                mode="lines+markers", name=label(name),
                hovertemplate="%{x:.1f} s: %{y:.4g}<extra>" + label(name) + "</extra>",
            ))  # fmt: skip
    layout = base_layout(title, "seconds", y_title)
    layout["yaxis"]["rangemode"] = "tozero"
    fig.update_layout(layout)
    return fig


def run_sections(page: Page, run: RunData, header: bool = True) -> None:
    """The whole run report, header first unless the page already has one."""
    if header:
        run_header(page, run)
    else:
        qualifiers(page, run)
    objectives_table(page, run)
    summary_table(page, run)
    latency_sections(page, run)
    time_sections(page, run)
    server_sections(page, run)
