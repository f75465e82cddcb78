"""The numbers behind the report's figures, and the pieces every figure shares.

The CDF is drawn as the judge reads percentiles: sorted samples at heights i / (n - 1),
joined by straight lines, which is exactly numpy's "linear" percentile (the method of
``harness.judge.analysis``). A curve thinned to a few thousand points therefore still passes
through every quantile the policy names, at the value the verdict printed, because those
points are computed from all samples and put back in. Histograms are binned here, not in the
browser, so a run of millions of ITL gaps costs a few kilobytes of page.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from harness.errors import ResultsError
from harness.judge.analysis import PERCENTILE_METHOD
from harness.judge.confidence import FloatArray
from harness.report.page import label
from harness.spec.metrics import SHARE_STAT, percentile_of
from harness.spec.quantity import format_quantity

#: Points per CDF trace at most: the body evenly in rank, both tails densely in log rank.
MAX_CDF_POINTS = 2000
_BODY, _TAIL, _HEAD = 1400, 400, 150
#: Bins of a histogram: twice the square root of the samples, within these bounds.
HISTOGRAM_BINS = (10, 60)
#: Window lengths a time series may use (seconds): the shortest giving at most ~60 windows.
WINDOW_STEPS = (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
MAX_WINDOWS = 60
MIN_WINDOWS = 5
MIN_PER_WINDOW = 10

COLORS = {
    "main": "#0969da",
    "second": "#bf3989",
    "third": "#1a7f37",
    "target": "#1a7f37",
    "alert": "#cf222e",
    "estimate": "#0550ae",
    "muted": "#8c959f",
    "good": "#1a7f37",
    "bad": "#cf222e",
    "unsure": "#8250df",
    "baseline": "#6e7781",
    "canary": "#0969da",
}
#: Latency metrics a run report always plots; others appear when an objective names them.
LATENCY_CDFS = ("ttft", "itl", "e2el")
CDF_LABELS = {
    "ttft": "TTFT",
    "tpot": "TPOT",
    "itl": "ITL",
    "e2el": "E2EL",
    "ttft_intended": "TTFT from intended send",
    "e2el_intended": "E2EL from intended send",
    "schedule_lag": "schedule lag",
}


def cdf_points(
    samples: FloatArray, quantiles: Iterable[float] = ()
) -> tuple[FloatArray, FloatArray]:
    """The empirical CDF (x sorted, y = i / (n - 1)), thinned to at most ``MAX_CDF_POINTS``
    plus the exact points at ``quantiles`` (fractions in [0, 1]); first and last kept."""
    values = np.sort(np.asarray(samples, dtype=np.float64))
    n = values.size
    if n == 0:
        return np.zeros(0), np.zeros(0)
    if n == 1:
        return values, np.ones(1)
    last = n - 1
    if n <= MAX_CDF_POINTS:
        ranks = np.arange(n)
    else:
        body = np.rint(np.linspace(0, last, _BODY))
        tail = last - np.rint(last * np.geomspace(0.05, 1.0 / last, _TAIL))
        head = np.rint(last * np.geomspace(1.0 / last, 0.05, _HEAD))
        ranks = np.unique(np.concatenate([body, tail, head, [0, last]]).astype(np.int64))
    x, y = values[ranks], ranks / last
    qs = np.array(sorted({float(q) for q in quantiles if 0.0 <= q <= 1.0}), dtype=np.float64)
    if qs.size:
        xq = np.percentile(values, qs * 100.0, method=PERCENTILE_METHOD)
        x, y = np.concatenate([x, xq]), np.concatenate([y, qs])
        order = np.lexsort((x, y))
        x, y = x[order], y[order]
    return x, y


@dataclass(frozen=True, slots=True)
class Bars:
    """A histogram's bars: bin centres and widths, counts, and how many samples lie past
    the range."""

    centers: FloatArray
    widths: FloatArray
    counts: FloatArray
    beyond: int
    upper: float


def bars(samples: FloatArray) -> Bars:
    """Samples binned from the least to the 99.5th percentile (the far tail would squeeze
    the rest into one bar; how many lie past it is kept and said)."""
    values = np.asarray(samples, dtype=np.float64)
    bins = int(np.clip(2 * math.sqrt(values.size), *HISTOGRAM_BINS))
    lo = float(np.min(values))
    hi = float(np.percentile(values, 99.5, method=PERCENTILE_METHOD)) if values.size >= 400 else \
        float(np.max(values))  # fmt: skip
    if hi <= lo:
        hi = lo + max(abs(lo) * 1e-3, 1e-9)
    inside = values[values <= hi]
    counts, edges = np.histogram(inside, bins=bins, range=(lo, hi))
    return Bars((edges[:-1] + edges[1:]) / 2, np.diff(edges), counts.astype(np.float64),
                  int(values.size - inside.size), hi)  # fmt: skip


def window_length(duration_s: float, requests: int = 0) -> float:
    """The shortest of ``WINDOW_STEPS`` that cuts the duration into at most ``MAX_WINDOWS``
    windows with ``MIN_PER_WINDOW`` requests each on average (fewer make a percentile per
    window noise), unless that would leave under ``MIN_WINDOWS``."""
    for step in WINDOW_STEPS:
        count = duration_s / step
        if count <= MAX_WINDOWS and (requests >= MIN_PER_WINDOW * count or count <= MIN_WINDOWS):
            return step
    return WINDOW_STEPS[-1]


def time_scale(largest_s: float) -> tuple[float, str]:
    """Milliseconds for latencies under a second, else seconds: (factor, unit)."""
    return (1e3, "ms") if largest_s < 1.0 else (1.0, "s")


def base_layout(title: str, x_title: str, y_title: str, height: int = 360) -> dict[str, Any]:
    """The layout every figure starts from: white, compact margins, legend under the plot.
    ``title`` is plotly text: the caller escapes what came from a file (``page.label``)."""
    return {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 14}},
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "xaxis": {"title": {"text": x_title}, "zeroline": False},
        "yaxis": {"title": {"text": y_title}, "zeroline": False},
        "legend": {"orientation": "h", "y": -0.2, "x": 0, "font": {"size": 11}},
        "hovermode": "closest",
    }


@dataclass(frozen=True, slots=True)
class Bound:
    """An objective drawn on a CDF: at value ``x`` (base unit) the CDF must reach ``y``."""

    name: str
    x: float
    y: float | None  # None: a mean, max or min, drawn as a vertical line
    kind: str  # "target" or "alert"
    stat: str

    def said(self) -> str:
        """What the bound asks, in words: "p90-latency target: p90 ≤ 2 s", "e2el-share
        alert: ≥ 95 % ≤ 2 s"."""
        at = format_quantity(self.x, "s")
        if self.stat == SHARE_STAT and self.y is not None:
            return f"{self.name} {self.kind}: ≥ {self.y * 100:.4g} % ≤ {at}"
        return f"{self.name} {self.kind}: {self.stat} ≤ {at}"


def bounds_on_cdf(
    objectives: Sequence[Mapping[str, Any]], metric: str, share_bounds: Mapping[str, float]
) -> list[Bound]:
    """The targets and alerts of the objectives on ``metric`` (verdict.json's objectives),
    placed where they bind on its CDF: a pXX objective at (bound, XX %), a share_under one at
    (its bound, the share), a mean/max/min as a vertical line at the bound."""
    out = []
    for o in objectives:
        if o.get("metric") != metric:
            continue
        stat, name = str(o.get("stat")), str(o.get("name"))
        for kind in ("target", "alert"):
            value = o.get(kind)
            if isinstance(value, list):  # a band: its upper edge binds a latency
                value = value[1] if len(value) == 2 else None
            if not isinstance(value, int | float):
                continue
            if stat == SHARE_STAT:
                at = share_bounds.get(name)
                if at is not None:
                    out.append(Bound(name, at, float(value), kind, stat))
                continue
            q = percentile_of(stat)
            out.append(Bound(name, float(value), None if q is None else q / 100.0, kind, stat))
    return out


def bound_traces(bounds: Sequence[Bound], scale: float, x0: float) -> list[go.Scatter]:
    """Each bound as a corner: a dashed line at its height up to its value and down to the
    axis (the CDF passes the objective when it runs above and left of the corner), or a
    vertical line for a mean/max/min bound."""
    traces = []
    for b in bounds:
        colour = COLORS["target"] if b.kind == "target" else COLORS["alert"]
        x = b.x * scale
        text = label(b.said())
        if b.y is None:
            xs, ys, sizes = [x, x], [0.0, 1.0], [0, 0]
        else:
            xs, ys, sizes = [x0, x, x], [b.y, b.y, 0.0], [0, 9, 0]
            text += f" (the CDF reaches {b.y:.4g} there or before)"
        traces.append(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name=f"{label(b.name)} {b.kind}",
            line={"color": colour, "dash": "dash" if b.kind == "target" else "dot", "width": 1.5},
            marker={"size": sizes, "color": colour, "symbol": "diamond"},
            hovertext=[text] * len(xs), hoverinfo="text",
        ))  # fmt: skip
    return traces


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are numbers and finite."""
    return [float(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]


def read_document(
    path: Path, schema: int, items: str, valid: Callable[[Any], bool]
) -> dict[str, Any]:
    """A versioned JSON document (capacity.json, study.json), refusing a damaged one, a schema
    this version does not know, or an ``items`` list whose entries ``valid`` rejects."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable: {exc}") from None
    if not isinstance(doc, dict) or doc.get("schema") != schema:
        raise ResultsError(f"{path}: not a {path.name} of schema {schema}")
    document: dict[str, Any] = doc
    entries = doc.get(items)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and valid(e) for e in entries):
        raise ResultsError(f"{path}: damaged ({items} must be a list of valid entries)")
    return document
