"""Per-run metrics from the request records: the numbers the judge and the reports read.

The definitions follow vLLM's benchmark (docs/measurement.md). Everything is computed
column-wise on Arrow/NumPy arrays, never per record in Python, because the judge must keep up
with runs of tens of millions of records. Records come in as a pyarrow Table (what
``records.log.read_table`` returns) or as a pandas DataFrame with the columns of
``RequestRecord.to_row()``, which is converted to Arrow once (a DataFrame whose
``chunk_times`` holds Python lists costs a pass over Python objects; large runs should come
as Arrow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness.collectors.window import HistogramWindow
from harness.judge.confidence import FloatArray, OrderStatistics, percentile
from harness.judge.dependence import (
    BATCHES,
    DesignEffect,
    Starts,
    batch_starts,
    count_effect,
    kept_starts,
    request_batches,
    share_effect,
)
from harness.judge.served import (
    FALLBACK_CLASS,
    NO_RULE,
    SERVED_COLUMNS,
    ServedRule,
    top_backends,
)
from harness.judge.verdict import LatencyStats, RunSummary
from harness.spec.metrics import percentile_of
from harness.workload.calibration import TokenCalibration, token_calibration

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

#: The percentile method of the judge and the summary alike, so a report never shows a p99
#: that disagrees with the one an objective was judged on.
PERCENTILE_METHOD: Final = "linear"

#: Distribution metrics this module computes; a metric without a key in ``RunMetrics.samples``
#: (gpu.utilization, for now) has no data.
DISTRIBUTION_METRICS = (
    "ttft",
    "tpot",
    "itl",
    "e2el",
    "ttft_intended",
    "e2el_intended",
    "schedule_lag",
)
SCALAR_METRICS = ("error_rate", "fallback_rate", "request_rate", "output_token_rate", "goodput")
GOODPUT_KEYS = ("ttft", "tpot", "e2el", "itl")

#: The record columns analysis reads (a subset of ``RequestRecord.to_row()``).
RECORD_COLUMNS = (
    "phase",
    "stream",
    "t_intended",
    "t_sent",
    "t_first",
    "t_last",
    "t_done",
    "chunk_times",
    "prompt_tokens",
    "output_tokens",
    "error",
)

OPTIONAL_COLUMNS = (
    "planned_prompt_tokens",
    "max_tokens",
    "output_counted",
    *SERVED_COLUMNS,
)  # absent in hand-made tables

_NO_SLO: Mapping[str, float] = MappingProxyType({})
_NO_HIST: Mapping[str, HistogramWindow] = MappingProxyType({})
_NO_REASON: Mapping[str, str] = MappingProxyType({})
_NO_BATCHES: Mapping[str, Starts] = MappingProxyType({})
_NO_EFFECTS: Mapping[str, DesignEffect] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RunMetrics:
    """What a run measured in its measure phase; the judge's only input besides the policy.

    ``samples`` holds one read-only array per distribution metric with data; ``scalars`` holds
    the run-level values, None where undefined (no attempts, no duration).
    """

    samples: Mapping[str, FloatArray]
    scalars: Mapping[str, float | None]
    attempted: int
    failed: int
    succeeded: int
    good: int  # succeeded and met every per-request goodput SLO
    error_classes: Mapping[str, int]
    duration_s: float | None
    prompt_tokens_mean: float | None = None
    output_tokens_mean: float | None = None
    prompt_vs_planned: TokenCalibration | None = None  # usage / words the workload planned
    output_vs_asked: TokenCalibration | None = None  # usage / max_tokens asked for
    # Successful requests whose output tokens are their content chunks: the server sent no
    # usage (a lower bound when a chunk carries several tokens); and those the workload's
    # tokenizer counted instead.
    output_tokens_from_chunks: int = 0
    output_tokens_from_tokenizer: int = 0
    # Server histograms over the measured window (server.ttft, gateway.e2el, ...), and why a
    # collected metric has no data (Prometheus down, no GPU, a restart), for the verdict.
    histograms: Mapping[str, HistogramWindow] = field(default_factory=lambda: _NO_HIST)
    missing: Mapping[str, str] = field(default_factory=lambda: _NO_REASON)
    # Each sample array is grouped by batch of requests (harness.judge.dependence); these are
    # the offsets where each batch begins. With the design effects of error_rate,
    # request_rate and goodput, they make the bounds hold on dependent data. Absent
    # (hand-made metrics): the samples are taken as independent.
    batches: Mapping[str, Starts] = field(default_factory=lambda: _NO_BATCHES)
    effects: Mapping[str, DesignEffect] = field(default_factory=lambda: _NO_EFFECTS)
    # Requests the client saw succeed that a gateway served by a fallback or an unexpected
    # deployment (harness.judge.served); in ``failed`` too when the policy counts them as
    # errors. The deployments that served them, most first.
    fallbacks: int = 0
    fallbacks_are_errors: bool = False
    fallback_backends: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


def statistic(samples: FloatArray, stat: str) -> float:
    """A distribution stat (pXX, mean, max, min) of non-empty samples, as the judge computes it."""
    if samples.size == 0:
        raise ValueError("no samples")
    q = percentile_of(stat)
    if q is not None:
        return float(np.percentile(samples, q, method=PERCENTILE_METHOD))
    if stat == "mean":
        return float(np.mean(samples))
    if stat == "max":
        return float(np.max(samples))
    if stat == "min":
        return float(np.min(samples))
    raise ValueError(f"unknown distribution stat {stat!r}")


def analyse(
    records: pd.DataFrame | pa.Table,
    measure_start: float,
    measure_end: float,
    goodput_slo: Mapping[str, float] = _NO_SLO,
    served: ServedRule = NO_RULE,
) -> RunMetrics:
    """Compute a run's metrics from its records; only ``phase == "measure"`` rows count.

    ``measure_start``/``measure_end`` bound the measured window in monotonic seconds; requests
    still in flight at its end stretch it to the last ``t_done`` so their completions do not
    inflate the rates. ``goodput_slo`` maps ttft/tpot/e2el/itl to per-request bounds (seconds).

    Choices beyond docs/measurement.md: latencies come from successful streaming rows; a successful
    non-streaming row adds only an E2EL (to ``t_last``, else ``t_done``). ``schedule_lag`` covers
    every measured row with an intended time, failed ones too, since it describes the load
    generator, not the target. For goodput a request lacking a value an SLO needs (no TTFT on a
    non-streaming row, no TPOT with one output token, no ITL gap with one chunk) does not count.
    ``served`` says which successes a gateway served from elsewhere, and whether they fail.
    """
    unknown = sorted(set(goodput_slo) - set(GOODPUT_KEYS))
    if unknown:
        raise ValueError(f"goodput SLO keys {unknown}: expected some of {list(GOODPUT_KEYS)}")
    table = _measured(_as_table(records))
    n = table.num_rows
    # Rows grouped by batch of requests (harness.judge.dependence), in their order within a
    # batch: every sample array then comes out grouped too, and a design effect is one
    # reduceat over it instead of a scatter.
    batch = request_batches(_floats(table, "t_sent"), _floats(table, "t_done"))
    if n > 1 and bool(np.any(batch[1:] < batch[:-1])):
        order = np.argsort(batch, kind="stable")
        table, batch = table.take(pa.array(order)), batch[order]
    rows = batch_starts(batch)

    error = pc.fill_null(pc.cast(table["error"], pa.string()), "")
    ok: BoolArray = pc.equal(error, "").to_numpy(zero_copy_only=False).astype(np.bool_)
    fallback = served.mask(table) & ok
    if served.as_error and fallback.any():
        ok &= ~fallback
        error = pc.if_else(pa.array(fallback), FALLBACK_CLASS, error)
    stream = pc.fill_null(pc.cast(table["stream"], pa.bool_()), False)
    streamed: BoolArray = stream.to_numpy(zero_copy_only=False).astype(np.bool_)
    latency_rows = ok & streamed

    t_sent = _floats(table, "t_sent")
    t_first = _floats(table, "t_first")
    t_last = _floats(table, "t_last")
    t_done = _floats(table, "t_done")
    t_intended = _floats(table, "t_intended")
    usage_out = _floats(table, "output_tokens")
    prompt_tokens = _floats(table, "prompt_tokens")
    lengths, chunk_values = flat_chunks(table)

    out_tokens = np.where(np.isnan(usage_out), lengths.astype(np.float64), usage_out)
    end = np.where(streamed | ~np.isnan(t_last), t_last, t_done)
    ttft = np.where(latency_rows, t_first - t_sent, np.nan)
    e2el = np.where(ok, end - t_sent, np.nan)
    multi = latency_rows & (out_tokens > 1)
    tpot = np.full(n, np.nan)
    np.divide(e2el - ttft, out_tokens - 1.0, out=tpot, where=multi)

    gaps, real_gap, starts = chunk_gaps(lengths, chunk_values)
    itl_kept = real_gap & np.repeat(latency_rows, lengths)[1:]
    intended = ~np.isnan(t_intended)

    # a gap belongs to the row of its later chunk: a batch's gaps begin one before its chunks
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    gap_rows = np.clip(offsets[rows] - 1, 0, gaps.size)
    kept = {
        "ttft": _grouped(ttft, rows),
        "tpot": _grouped(tpot, rows),
        "itl": _grouped(np.where(itl_kept, gaps, np.nan), gap_rows),
        "e2el": _grouped(e2el, rows),
        "ttft_intended": _grouped(
            np.where(intended & latency_rows, t_first - t_intended, np.nan), rows
        ),
        "e2el_intended": _grouped(np.where(ok & intended, end - t_intended, np.nan), rows),
        "schedule_lag": _grouped(np.where(intended, t_sent - t_intended, np.nan), rows),
    }
    samples = {name: values for name, (values, _) in kept.items()}

    good_rows = ok.copy()
    per_request = {"ttft": ttft, "tpot": tpot, "e2el": e2el}
    for key, bound in goodput_slo.items():
        if key == "itl":
            good_rows &= latency_rows & (max_gaps(gaps, real_gap, starts, lengths) <= bound)
        else:
            good_rows &= per_request[key] <= bound  # NaN (no value) compares False

    attempted = n
    succeeded = int(np.count_nonzero(ok))
    good = int(np.count_nonzero(good_rows))
    last_done = float(np.nanmax(t_done)) if n and not np.all(np.isnan(t_done)) else -math.inf
    duration = float(max(measure_end, last_done) - measure_start)
    duration_s = duration if math.isfinite(duration) else None
    rated = attempted > 0 and duration_s is not None and duration_s > 0

    def rate(count: float) -> float | None:
        return count / duration if rated else None

    slices = _time_slices(t_done, measure_start, duration)
    effects = {
        "error_rate": share_effect(rows, ~ok),
        "fallback_rate": share_effect(rows, fallback),
        "request_rate": count_effect(_per_slice(slices, ok)),
        "goodput": count_effect(_per_slice(slices, good_rows)),
    }
    scalars: dict[str, float | None] = {
        "error_rate": (attempted - succeeded) / attempted if attempted else None,
        "fallback_rate": int(np.count_nonzero(fallback)) / attempted if attempted else None,
        "request_rate": rate(succeeded),
        "output_token_rate": rate(float(np.sum(out_tokens[ok]))),
        "goodput": rate(good),
    }
    return RunMetrics(
        samples=MappingProxyType(samples),
        scalars=MappingProxyType(scalars),
        attempted=attempted,
        failed=attempted - succeeded,
        succeeded=succeeded,
        good=good,
        error_classes=MappingProxyType(_error_classes(error, ok)),
        duration_s=duration_s,
        prompt_tokens_mean=_mean(prompt_tokens[ok]),
        output_tokens_mean=_mean(out_tokens[ok]),
        prompt_vs_planned=_calibration(table, "planned_prompt_tokens", prompt_tokens, ok),
        output_vs_asked=_calibration(table, "max_tokens", usage_out, ok),
        output_tokens_from_chunks=int(np.count_nonzero(ok & np.isnan(usage_out))),
        output_tokens_from_tokenizer=int(np.count_nonzero(ok & _counted(table))),
        batches=MappingProxyType({name: starts for name, (_, starts) in kept.items()}),
        effects=MappingProxyType(effects),
        fallbacks=int(np.count_nonzero(fallback)),
        fallbacks_are_errors=served.as_error,
        fallback_backends=MappingProxyType(
            top_backends(table["served_by"], fallback) if "served_by" in table.column_names else {}
        ),
    )


def _time_slices(t_done: FloatArray, start: float, duration: float) -> IntArray:
    """Each request's slice of the measured window cut into BATCHES equal stretches of time
    (-1 outside it): what a rate's burstiness is measured on."""
    if not math.isfinite(duration) or duration <= 0:
        return np.full(t_done.size, -1, dtype=np.int64)
    at = np.floor((t_done - start) / duration * BATCHES)
    inside = np.isfinite(at) & (at >= 0)
    return np.where(inside, np.minimum(np.nan_to_num(at), BATCHES - 1), -1).astype(np.int64)


def _per_slice(slices: IntArray, rows: BoolArray) -> FloatArray:
    chosen = slices[rows & (slices >= 0)]
    return np.bincount(chosen, minlength=BATCHES).astype(np.float64)


SUMMARY_METRICS = ("ttft", "tpot", "itl", "e2el", "schedule_lag")
SUMMARY_PERCENTILES = (50.0, 90.0, 99.0)


def summarise(metrics: RunMetrics, order: OrderStatistics | None = None) -> RunSummary:
    """The headline numbers of a run, with the percentile method the judge uses (and its
    order statistics, when the judge shares them)."""
    order = order or OrderStatistics()
    return RunSummary(
        requests=metrics.attempted,
        errors=metrics.failed,
        error_classes=dict(metrics.error_classes),
        duration_s=metrics.duration_s,
        request_rate=metrics.scalars.get("request_rate"),
        output_token_rate=metrics.scalars.get("output_token_rate"),
        goodput=metrics.scalars.get("goodput"),
        ttft_s=latency_stats(metrics.samples.get("ttft"), order),
        tpot_s=latency_stats(metrics.samples.get("tpot"), order),
        itl_s=latency_stats(metrics.samples.get("itl"), order),
        e2el_s=latency_stats(metrics.samples.get("e2el"), order),
        schedule_lag_s=latency_stats(metrics.samples.get("schedule_lag"), order),
        prompt_tokens_mean=metrics.prompt_tokens_mean,
        output_tokens_mean=metrics.output_tokens_mean,
        prompt_vs_planned=metrics.prompt_vs_planned,
        output_vs_asked=metrics.output_vs_asked,
        output_tokens_from_chunks=metrics.output_tokens_from_chunks,
        output_tokens_from_tokenizer=metrics.output_tokens_from_tokenizer,
        fallbacks=metrics.fallbacks,
        fallbacks_are_errors=metrics.fallbacks_are_errors,
        fallback_backends=dict(metrics.fallback_backends),
    )


def latency_stats(samples: FloatArray | None, order: OrderStatistics | None = None) -> LatencyStats:
    """mean/p50/p90/p99 of samples; all None when there are none."""
    if samples is None or samples.size == 0:
        return LatencyStats()
    order = order or OrderStatistics()
    p50, p90, p99 = (percentile(samples, q, order) for q in SUMMARY_PERCENTILES)
    return LatencyStats(
        mean=float(np.mean(samples)),
        p50=float(p50),
        p90=float(p90),
        p99=float(p99),
        n=int(samples.size),
    )


def _as_table(records: pd.DataFrame | pa.Table) -> pa.Table:
    if isinstance(records, pd.DataFrame):
        table = pa.Table.from_pandas(records, preserve_index=False)
    elif isinstance(records, pa.Table):
        table = records
    else:
        raise TypeError(f"expected a pandas DataFrame or a pyarrow Table, got {type(records)}")
    missing = [c for c in RECORD_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"records lack the columns {missing}")
    return table


def _measured(table: pa.Table) -> pa.Table:
    phase = pc.fill_null(pc.cast(table["phase"], pa.string()), "")
    columns = [*RECORD_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in table.column_names)]
    return table.select(columns).filter(pc.equal(phase, "measure"))


def _calibration(
    table: pa.Table, column: str, actual: FloatArray, ok: BoolArray
) -> TokenCalibration | None:
    """actual / asked-for lengths over successful requests, when the records say what was asked."""
    if column not in table.column_names:
        return None
    return token_calibration(_floats(table, column)[ok], actual[ok])


def _counted(table: pa.Table) -> BoolArray:
    """Rows whose output_tokens the workload's tokenizer counted (absent column: none)."""
    if "output_counted" not in table.column_names:
        return np.zeros(table.num_rows, dtype=np.bool_)
    column = pc.fill_null(pc.cast(table["output_counted"], pa.bool_()), False)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.bool_)


def _floats(table: pa.Table, column: str) -> FloatArray:
    """A numeric column as float64 with NaN for nulls (null-typed columns included)."""
    values = pc.fill_null(pc.cast(table[column], pa.float64()), math.nan)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)


def flat_chunks(table: pa.Table) -> tuple[IntArray, FloatArray]:
    """Per-row chunk counts and all chunk times flattened in row order (null lists are empty)."""
    column = table["chunk_times"]
    kind = column.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_null(kind)):
        if column.null_count < len(column):
            raise ValueError(f"records column chunk_times: expected lists of times, got {kind}")
        # an empty frame built without types: nothing to read
        return np.zeros(len(column), dtype=np.int64), np.zeros(0, dtype=np.float64)
    lists = pc.cast(column, pa.list_(pa.float64())).combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(lists), 0)
    values = pc.fill_null(pc.list_flatten(lists), math.nan)
    return (
        np.asarray(lengths.to_numpy(zero_copy_only=False), dtype=np.int64),
        np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64),
    )


def chunk_gaps(lengths: IntArray, values: FloatArray) -> tuple[FloatArray, BoolArray, IntArray]:
    """Differences of consecutive flattened chunk times, which of them are real gaps, row starts.

    Difference j is values[j+1] - values[j]; it is a real gap unless values[j+1] opens a row.
    Working on offsets keeps this at a few passes over the values, with no per-value row index.
    """
    starts = np.zeros(lengths.size, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    diffs = np.diff(values)
    real = np.ones(diffs.size, dtype=np.bool_)
    real[starts[(lengths > 0) & (starts > 0)] - 1] = False
    return diffs, real, starts


def max_gaps(diffs: FloatArray, real: BoolArray, starts: IntArray, lengths: IntArray) -> FloatArray:
    """Each row's largest gap; NaN for a row with fewer than two chunks (or a NaN gap)."""
    out = np.full(lengths.size, np.nan)
    has_gap = lengths > 1
    if np.any(has_gap):
        # a segment runs from a row's first gap to the next such row; what lies between is
        # row boundaries (masked to -inf) and rows of one chunk (no gaps), so the max is the row's
        masked = np.where(real, diffs, -np.inf)
        out[has_gap] = np.maximum.reduceat(masked, starts[has_gap])
    return out


def _grouped(values: FloatArray, starts: Starts) -> tuple[FloatArray, Starts]:
    """The finite values, read-only, grouped by batch as the rows are, with their offsets."""
    finite = np.isfinite(values)
    out = np.ascontiguousarray(values[finite], dtype=np.float64)
    out.flags.writeable = False
    return out, kept_starts(starts, finite)


def _mean(values: FloatArray) -> float | None:
    kept = values[~np.isnan(values)]
    return float(np.mean(kept)) if kept.size else None


def _error_classes(error: Any, ok: BoolArray) -> dict[str, int]:
    """Failures per error class, most frequent first (ties by name, so record order is moot)."""
    counts = pc.value_counts(error.filter(pa.array(~ok)))
    pairs = zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    return dict(sorted(((str(v), int(c)) for v, c in pairs), key=lambda vc: (-vc[1], vc[0])))
