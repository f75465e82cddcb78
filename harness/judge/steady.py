"""Steady state and time windows: was the measured load stable, and did every stretch of it
meet the objectives that must hold in every window?

A run judged on its whole window can pass while its last minute breached the SLO (a queue
that only started growing) or while it never settled (a cache still warming). Two tools:

- ``steady_state``: the measured window cut into segments; the rate of successful requests
  (by send time) in each must stay within noise of the mean (15 %, or three Poisson
  standard deviations when counts are small), and the median E2EL must not drift: the
  first and last segments' medians may differ by at most 25 % unless their order-statistic
  bounds overlap. A run that
  fails either is flagged (a PASS becomes WARN), with the numbers.
  With stages, each hold is checked against itself and ramps are left out.
- ``window_metrics``: the records cut into consecutive windows of a given length, analysed
  each, for objectives with ``window:`` (judged in every window; see harness.judge.classify).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.judge.analysis import RunMetrics, analyse
from harness.judge.confidence import percentile_with_interval
from harness.judge.served import NO_RULE, ServedRule
from harness.judge.verdict import CheckResult
from harness.spec.load import LoadSpec
from harness.spec.quantity import format_quantity

SEGMENTS = 5
RATE_TOLERANCE = 0.15
DRIFT_TOLERANCE = 0.25
MIN_SEGMENT_REQUESTS = 10


def holds_of(load: LoadSpec, t_start: float) -> list[tuple[float, float]]:
    """The spans (monotonic seconds) where a staged load holds a level: ramps and level-0
    stages left out. Empty for a load without stages, which is one hold."""
    if load.stages is None:
        return []
    return [
        (t_start + seg.start, t_start + seg.end)
        for seg in load.segments()
        if seg.level0 == seg.level1 and seg.level1 > 0 and seg.end > seg.start
    ]


def steady_state(
    table: pa.Table,
    start: float,
    end: float,
    confidence: float = 0.95,
    holds: Sequence[tuple[float, float]] = (),
) -> CheckResult:
    """Whether the measured window was steady: completion rate and median latency.

    With ``holds`` (a staged load), each hold inside the measured window is checked against
    itself and ramps are not checked: a step from 4 to 16 req/s is the scenario, not drift.
    """
    if not holds:
        return _steady_span(table, start, end, confidence)
    spans = [(max(lo, start), min(hi, end)) for lo, hi in holds]
    sent = table["t_sent"]
    parts = []
    for lo, hi in spans:
        if hi > lo:
            inside = table.filter(pc.and_(pc.greater_equal(sent, lo), pc.less(sent, hi)))
            parts.append((lo, hi, _steady_span(inside, lo, hi, confidence)))
    judged = [(lo, hi, c) for lo, hi, c in parts if c.ok is not None]
    if not judged:
        return CheckResult("steady state", None, f"too few requests in any of {len(parts)} stages")
    details = "; ".join(
        f"stage {lo - start:.0f}–{hi - start:.0f} s: {c.detail}" for lo, hi, c in judged
    )
    ok = all(c.ok for _, _, c in judged)
    head = f"{len(judged)}/{len(parts)} stages judged (ramps excluded)"
    return CheckResult("steady state", ok, f"{head}; {details}")


def _steady_span(table: pa.Table, start: float, end: float, confidence: float) -> CheckResult:
    """The steady-state check over one span of the measured window."""
    name = "steady state"
    span = end - start
    ok_rows = table.filter(pc.and_(pc.equal(table["phase"], "measure"), pc.is_null(table["error"])))
    done = pc.fill_null(ok_rows["t_done"], math.nan).to_numpy(zero_copy_only=False)
    sent = ok_rows["t_sent"].to_numpy(zero_copy_only=False)
    last = pc.fill_null(ok_rows["t_last"], math.nan).to_numpy(zero_copy_only=False)
    e2el = np.where(np.isnan(last), done, last) - sent
    if span <= 0 or done.size < SEGMENTS * MIN_SEGMENT_REQUESTS:
        return CheckResult(name, None, f"too few requests ({done.size}) to tell")
    edges = np.linspace(start, end, SEGMENTS + 1)
    seg_len = span / SEGMENTS
    # Successful requests by send time: counting by completion would short the first segment
    # by one latency's worth of completions and read as a ramp that is not there.
    counts = np.histogram(sent, bins=edges)[0]
    rates = counts / seg_len
    mean_rate = float(np.mean(rates))
    expected = max(float(np.mean(counts)), 1.0)
    allowed = max(RATE_TOLERANCE, 3.0 / math.sqrt(expected))
    worst = float(np.max(np.abs(rates - mean_rate))) / mean_rate if mean_rate > 0 else math.inf
    problems: list[str] = []
    if worst > allowed:
        problems.append(
            f"successful request rate moved {worst * 100:.0f} % from its mean (allowed "
            f"{allowed * 100:.0f} %): {', '.join(f'{r:.3g}' for r in rates)} /s"
        )
    seg_of = np.clip(((sent - start) // seg_len).astype(np.int64), 0, SEGMENTS - 1)
    first, final = e2el[seg_of == 0], e2el[seg_of == SEGMENTS - 1]
    first, final = first[np.isfinite(first)], final[np.isfinite(final)]
    drift_text = ""
    if first.size >= MIN_SEGMENT_REQUESTS and final.size >= MIN_SEGMENT_REQUESTS:
        a, (a_lo, a_hi) = percentile_with_interval(first, 50.0, confidence)
        b, (b_lo, b_hi) = percentile_with_interval(final, 50.0, confidence)
        drift = (b - a) / a if a > 0 else 0.0
        apart = b_lo > a_hi or a_lo > b_hi
        drift_text = (
            f"; median E2EL {format_quantity(a, 's')} in the first fifth, "
            f"{format_quantity(b, 's')} in the last ({drift * 100:+.0f} %)"
        )
        if apart and abs(drift) > DRIFT_TOLERANCE:
            problems.append(f"median E2EL drifted {drift * 100:+.0f} % from first to last fifth")
    summary = (
        f"successful request rate {mean_rate:.3g}/s within {worst * 100:.0f} % over {SEGMENTS} "
        f"segments of {seg_len:.3g} s{drift_text}"
    )
    if problems:
        return CheckResult(name, False, "not steady: " + "; ".join(problems) + drift_text)
    return CheckResult(name, True, summary)


def window_metrics(
    table: pa.Table,
    start: float,
    end: float,
    length_s: float,
    goodput_slo: Mapping[str, float],
    served: ServedRule = NO_RULE,
) -> list[tuple[float, float, RunMetrics]]:
    """The measured window cut into consecutive windows of ``length_s`` (the last one may be
    shorter; one under half a window joins the one before), each analysed on the requests
    sent in it."""
    edges = [start]
    while edges[-1] + length_s < end - 1e-9:
        edges.append(edges[-1] + length_s)
    if len(edges) > 1 and end - edges[-1] < length_s / 2:
        edges.pop()
    edges.append(end)
    sent = table["t_sent"]
    out: list[tuple[float, float, RunMetrics]] = []
    for lo, hi in itertools.pairwise(edges):
        inside = pc.and_(
            pc.greater_equal(sent, lo), pc.less(sent, hi) if hi < end else pc.less_equal(sent, hi)
        )
        out.append((lo, hi, analyse(table.filter(inside), lo, hi, goodput_slo, served)))
    return out
