"""Running tallies for early-stop looks: each look costs only the records since the last.

The final verdict reads every record exactly (harness.judge.analysis). A look, made every few
seconds while the load runs, must not: converting every record again at each look grows with
the run (62 µs a record held the interpreter lock; 12 ms of loop lag at 50 000 records). A
look instead folds the new records into tallies and judges from the tallies alone, in time
that does not grow with the records already taken:

- each client distribution metric in log-spaced bins 1 % wide (1 µs to 10^5 s) per batch of
  requests, with exact counts, sums, squares, minimum and maximum;
- requests, failures, fallback-served and good requests per batch, successes per quarter
  second.

Batches are runs of consecutive requests (in the order they finished) of a size that doubles
when there are ``MAX_BATCHES`` of them, merging neighbours, so a look's design effects
(harness.judge.dependence) come from 16 to 32 batches however long the run. Bounds read off
the bins are rounded outwards to the bin edges (an upper bound up, a lower bound down), so a
look is never more certain than the exact judge would be on the same records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

import numpy as np

from harness.judge.analysis import chunk_gaps, max_gaps
from harness.judge.confidence import (
    FloatArray,
    mean_interval_from,
    order_ranks,
    rate_interval,
    share_interval,
)
from harness.judge.dependence import (
    BATCHES,
    INDEPENDENT,
    DesignEffect,
    batch_mean_effect,
    batch_share_effect,
    count_effect,
)
from harness.judge.estimate import Estimate, thresholds
from harness.judge.served import NO_RULE, ServedRule
from harness.records.record import ErrorClass, RequestRecord
from harness.spec.metrics import SHARE_STAT, percentile_of
from harness.spec.policy import Objective

MAX_BATCHES: Final = 32
LOWEST: Final = 1e-6
RATIO: Final = 1.01
#: bin 0 holds everything up to LOWEST, the last everything above 10^5 s
BINS: Final = math.ceil(math.log(1e5 / LOWEST) / math.log(RATIO)) + 2
SLICE_S: Final = 0.25
LOOK_METRICS: Final = ("ttft", "tpot", "itl", "e2el", "ttft_intended", "e2el_intended",
                       "schedule_lag")  # fmt: skip


def bin_of(values: FloatArray) -> np.ndarray:
    """Each value's bin: 0 up to LOWEST, then bins RATIO apart, the last one open."""
    scaled = np.log(np.maximum(values, LOWEST) / LOWEST) / math.log(RATIO)
    index = np.where(values <= LOWEST, 0, np.floor(scaled).astype(np.int64) + 1)
    return np.minimum(index, BINS - 1)


def _upper_edge(index: int) -> float:
    return math.inf if index >= BINS - 1 else LOWEST * RATIO**index


def _lower_edge(index: int) -> float:
    return -math.inf if index <= 0 else LOWEST * RATIO ** (index - 1)


class Binned:
    """One metric's tallies: bin counts per batch, per-batch sums, squares, extremes."""

    def __init__(self) -> None:
        self.counts = np.zeros((MAX_BATCHES, BINS), dtype=np.int64)
        self.sums = np.zeros(MAX_BATCHES)
        self.squares = 0.0
        self.low = math.inf
        self.high = -math.inf

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, values: FloatArray, labels: np.ndarray) -> None:
        keep = np.isfinite(values)
        values, labels = values[keep], labels[keep]
        if not values.size:
            return
        bins = bin_of(values)
        if values.size * 8 < self.counts.size:  # a few values: touch only their cells
            np.add.at(self.counts, (labels, bins), 1)
        else:
            flat = labels * BINS + bins
            self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
        self.sums += np.bincount(labels, weights=values, minlength=MAX_BATCHES)
        self.squares += float(np.dot(values, values))
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def merge_pairs(self) -> None:
        half = MAX_BATCHES // 2
        self.counts[:half] = self.counts[0::2] + self.counts[1::2]
        self.counts[half:] = 0
        self.sums[:half] = self.sums[0::2] + self.sums[1::2]
        self.sums[half:] = 0.0

    def percentile(self, q: float, confidence: float) -> Estimate:
        """The q-quantile (a bin's geometric middle) and its bounds, rounded outwards."""
        total = self.counts.sum(axis=0)
        cumulative = np.cumsum(total)
        n = int(cumulative[-1])
        at = self._bin_of_rank(cumulative, math.ceil(q * (n - 1)))
        value = self._middle(at)
        inside = self.counts[:, : at + 1].sum(axis=1).astype(np.float64)
        per_batch = self.counts.sum(axis=1).astype(np.float64)
        deff = batch_share_effect(inside, per_batch).inflation(confidence)
        lower, upper = order_ranks(n, q, confidence, deff)
        low = (
            max(_lower_edge(self._bin_of_rank(cumulative, lower)), self.low)
            if lower is not None
            else -math.inf
        )
        high = (
            min(_upper_edge(self._bin_of_rank(cumulative, upper)), self.high)
            if upper is not None
            else math.inf
        )
        return Estimate(value, n, interval=(min(low, value), max(high, value)), deff=deff)

    def mean(self, confidence: float) -> Estimate:
        per_batch = self.counts.sum(axis=1).astype(np.float64)
        n = float(per_batch.sum())
        mean = float(self.sums.sum()) / n
        deff = batch_mean_effect(self.sums, per_batch, self.squares).inflation(confidence)
        variance = max(self.squares - n * mean * mean, 0.0) / (n - 1) if n > 1 else math.nan
        return Estimate(
            mean, int(n), mean_interval_from(mean, variance, int(n), confidence, deff), deff=deff
        )

    def share_under(self, bound: float, confidence: float) -> Estimate:
        """Shares at or under ``bound``: the bin holding it counts against either bound."""
        total = self.counts.sum(axis=0)
        n = int(total.sum())
        edge = int(bin_of(np.asarray([bound]))[0])
        surely = int(total[:edge].sum())
        maybe = int(total[: edge + 1].sum())
        per_batch = self.counts.sum(axis=1).astype(np.float64)
        inside = self.counts[:, : edge + 1].sum(axis=1).astype(np.float64)
        deff = batch_share_effect(inside, per_batch).inflation(confidence)
        low = share_interval(surely, n, confidence, deff)[0]
        high = share_interval(maybe, n, confidence, deff)[1]
        value = (surely + maybe) / 2 / n
        return Estimate(value, n, interval=(min(low, value), max(high, value)), deff=deff)

    def certified(
        self, est: Estimate, points: list[float], q: float, confidence: float
    ) -> Estimate:
        """The percentile's bounds tightened at the objective's thresholds, as the exact
        judge does (harness.judge.estimate), with the bin holding a threshold counted
        against the certification either way."""
        assert est.interval is not None
        low, high = est.interval
        total = self.counts.sum(axis=0)
        n = int(total.sum())
        per_batch = self.counts.sum(axis=1).astype(np.float64)
        for t in points:
            if not low < t < high:
                continue
            edge = int(bin_of(np.asarray([t]))[0])
            inside = self.counts[:, : edge + 1].sum(axis=1).astype(np.float64)
            deff = batch_share_effect(inside, per_batch).inflation(confidence)
            if share_interval(int(total[:edge].sum()), n, confidence, deff)[0] >= q:
                high = t
            elif share_interval(int(total[: edge + 1].sum()), n, confidence, deff)[1] < q:
                low = t
        return Estimate(est.value, est.n, interval=(low, high), deff=est.deff)

    def _bin_of_rank(self, cumulative: np.ndarray, rank: int) -> int:
        return int(np.searchsorted(cumulative, rank + 1))

    def _middle(self, index: int) -> float:
        low, high = max(_lower_edge(index), self.low), min(_upper_edge(index), self.high)
        return math.sqrt(low * high) if low > 0 else (low + high) / 2


class LookTallies:
    """Everything a look judges, folded in record by record batch."""

    def __init__(self, goodput: Mapping[str, float], served: ServedRule = NO_RULE) -> None:
        self.goodput = dict(goodput)
        self.served = served
        self.metrics = {name: Binned() for name in LOOK_METRICS}
        self.batch_size = 4
        self.requests = 0
        self.attempted = np.zeros(MAX_BATCHES)
        self.failed = np.zeros(MAX_BATCHES)
        self.fallbacks = np.zeros(MAX_BATCHES)
        self.succeeded = 0
        self.good = 0
        self.output_tokens = 0.0
        self.ok_slices = np.zeros(64)
        self.good_slices = np.zeros(64)

    def fold(self, records: Iterable[RequestRecord], measure_start: float) -> None:
        """Fold in new measured records (in the order they finished)."""
        rows = [r for r in records if r.phase == "measure" and r.error is not ErrorClass.ABORTED]
        if not rows:
            return
        nan = math.nan
        ok = np.fromiter((r.error is None for r in rows), bool, len(rows))
        fallback = ok & np.fromiter(map(self.served.one, rows), bool, len(rows))
        if self.served.as_error:
            ok &= ~fallback
        streamed = np.fromiter((r.stream for r in rows), bool, len(rows))
        t_sent = np.fromiter((r.t_sent for r in rows), float, len(rows))
        t_done = np.fromiter((r.t_done for r in rows), float, len(rows))
        t_first = np.fromiter(
            (nan if r.t_first is None else r.t_first for r in rows), float, len(rows)
        )
        t_last = np.fromiter(
            (nan if r.t_last is None else r.t_last for r in rows), float, len(rows)
        )
        t_intended = np.fromiter(
            (nan if r.t_intended is None else r.t_intended for r in rows), float, len(rows)
        )
        lengths = np.fromiter((len(r.chunk_times) for r in rows), np.int64, len(rows))
        chunks = np.fromiter((t for r in rows for t in r.chunk_times), float, int(lengths.sum()))
        usage = np.fromiter(
            (nan if r.output_tokens is None else r.output_tokens for r in rows), float, len(rows)
        )
        labels = self._labels(len(rows))
        out_tokens = np.where(np.isnan(usage), lengths.astype(np.float64), usage)
        latency_rows = ok & streamed
        end = np.where(streamed | ~np.isnan(t_last), t_last, t_done)
        ttft = np.where(latency_rows, t_first - t_sent, nan)
        e2el = np.where(ok, end - t_sent, nan)
        tpot = np.full(len(rows), nan)
        multi = latency_rows & (out_tokens > 1)
        np.divide(e2el - ttft, out_tokens - 1.0, out=tpot, where=multi)
        gaps, real, starts = chunk_gaps(lengths, chunks)
        gap_labels = np.repeat(labels, lengths)[1:]
        itl_kept = real & np.repeat(latency_rows, lengths)[1:]
        intended = ~np.isnan(t_intended)
        add = {
            "ttft": (ttft, labels),
            "tpot": (tpot, labels),
            "itl": (gaps[itl_kept], gap_labels[itl_kept]),
            "e2el": (e2el, labels),
            "ttft_intended": (np.where(intended & latency_rows, t_first - t_intended, nan), labels),
            "e2el_intended": (np.where(intended & ok, end - t_intended, nan), labels),
            "schedule_lag": (np.where(intended, t_sent - t_intended, nan), labels),
        }
        for name, (values, which) in add.items():
            self.metrics[name].add(values, which)
        good = ok.copy()
        per_request = {"ttft": ttft, "tpot": tpot, "e2el": e2el}
        for key, bound in self.goodput.items():
            if key == "itl":
                good &= latency_rows & (max_gaps(gaps, real, starts, lengths) <= bound)
            else:
                good &= per_request[key] <= bound
        self.attempted += np.bincount(labels, minlength=MAX_BATCHES)
        self.failed += np.bincount(labels[~ok], minlength=MAX_BATCHES)
        self.fallbacks += np.bincount(labels[fallback], minlength=MAX_BATCHES)
        self.succeeded += int(np.count_nonzero(ok))
        self.good += int(np.count_nonzero(good))
        self.output_tokens += float(np.sum(out_tokens[ok]))
        at = np.floor((t_done - measure_start) / SLICE_S)
        inside = np.isfinite(at) & (at >= 0)
        slot = at[inside].astype(np.int64)
        if slot.size:
            needed = int(slot.max()) + 1
            if needed > self.ok_slices.size:
                grow = max(needed, 2 * self.ok_slices.size) - self.ok_slices.size
                self.ok_slices = np.concatenate([self.ok_slices, np.zeros(grow)])
                self.good_slices = np.concatenate([self.good_slices, np.zeros(grow)])
            self.ok_slices[:needed] += np.bincount(slot[ok[inside]], minlength=needed)
            self.good_slices[:needed] += np.bincount(slot[good[inside]], minlength=needed)

    def _labels(self, count: int) -> np.ndarray:
        """Batches for the next ``count`` requests, merging neighbours when they run out."""
        while (self.requests + count - 1) // self.batch_size >= MAX_BATCHES:
            for binned in self.metrics.values():
                binned.merge_pairs()
            for tally in (self.attempted, self.failed, self.fallbacks):
                half = MAX_BATCHES // 2
                tally[:half] = tally[0::2] + tally[1::2]
                tally[half:] = 0
            self.batch_size *= 2
        labels = (self.requests + np.arange(count)) // self.batch_size
        self.requests += count
        return labels.astype(np.int64)

    def estimate(self, objective: Objective, duration_s: float, confidence: float) -> Estimate:
        """The objective on the tallies, as harness.judge.estimate would on the records."""
        metric = objective.definition
        attempted = int(self.attempted.sum())
        if metric.kind == "scalar":
            return self._scalar(metric.name, attempted, duration_s, confidence)
        binned = self.metrics.get(metric.name)
        if metric.source != "client" or binned is None:
            return Estimate(None, 0, missing=f"no {metric.name} data during the run")
        n = binned.n
        if n == 0:
            return Estimate(None, 0, missing=f"no {metric.name} samples yet")
        if objective.stat == SHARE_STAT:
            assert objective.bound is not None
            return binned.share_under(objective.bound, confidence)
        q = percentile_of(objective.stat)
        if q is not None:
            est = binned.percentile(q / 100.0, confidence)
            return binned.certified(est, thresholds(objective), q / 100.0, confidence)
        if objective.stat == "mean":
            return binned.mean(confidence)
        value = binned.high if objective.stat == "max" else binned.low
        return Estimate(value, n)

    def _scalar(self, name: str, attempted: int, duration: float, confidence: float) -> Estimate:
        if attempted == 0:
            return Estimate(None, 0, missing="no requests yet")
        if name in ("error_rate", "fallback_rate"):
            tally = self.failed if name == "error_rate" else self.fallbacks
            deff = batch_share_effect(tally, self.attempted).inflation(confidence)
            count = int(tally.sum())
            interval = share_interval(count, attempted, confidence, deff)
            return Estimate(count / attempted, attempted, interval, deff=deff)
        if duration <= 0:
            return Estimate(None, attempted, missing="no measured duration yet")
        if name == "output_token_rate":
            return Estimate(self.output_tokens / duration, attempted)
        count, slices = (
            (self.succeeded, self.ok_slices)
            if name == "request_rate"
            else (self.good, self.good_slices)
        )
        if name not in ("request_rate", "goodput"):
            return Estimate(None, attempted, missing=f"no {name} during the run")
        deff = _slices_effect(slices, duration).inflation(confidence)
        interval = rate_interval(count, duration, confidence, deff)
        return Estimate(count / duration, attempted, interval, deff=deff)


def _slices_effect(slices: FloatArray, duration: float) -> DesignEffect:
    """Successes per quarter second regrouped into BATCHES equal stretches of the window."""
    used = min(slices.size, math.floor(duration / SLICE_S))
    groups = min(BATCHES, used)
    if groups < 2:
        return INDEPENDENT
    per = used // groups
    return count_effect(slices[used - per * groups : used].reshape(groups, per).sum(axis=1))
