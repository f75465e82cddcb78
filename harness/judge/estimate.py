"""Each objective's estimate on a run: the number, how many samples it rests on, its bounds
(harness.judge.confidence) and, when there is no number, why; and how much more data would decide
an objective whose bounds straddle a threshold."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from harness.judge.analysis import RunMetrics, statistic
from harness.judge.confidence import (
    FloatArray,
    OrderStatistics,
    duration_for_rate,
    mean_interval,
    percentile,
    percentile_with_interval,
    rate_interval,
    requests_for_share,
    samples_for_mean,
    samples_for_percentile,
    share_interval,
)
from harness.judge.dependence import INDEPENDENT, Starts, mean_effect, share_effect
from harness.spec.metrics import SHARE_STAT, percentile_of
from harness.spec.policy import Band, Objective

DEFAULT_CONFIDENCE = 0.95

# What a distribution metric's samples come from, to say what was missing when there are none.
_SOURCE = {
    "ttft": "successful streaming requests",
    "tpot": "successful streaming requests with more than one output token",
    "itl": "successful streaming requests with at least two content chunks",
    "e2el": "successful requests",
    "ttft_intended": "successful streaming requests with an intended send time (open loop)",
    "e2el_intended": "successful requests with an intended send time (open loop)",
    "schedule_lag": "requests with an intended send time (open loop)",
}


@dataclass(frozen=True, slots=True)
class Estimate:
    """An objective's statistic on a run: None with ``missing`` saying why when there is none."""

    value: float | None
    n: int  # samples behind the value (requests attempted, for run-level scalars)
    interval: tuple[float, float] | None = None
    missing: str | None = None
    # n over the effective sample size the bounds were taken on (harness.judge.dependence)
    deff: float = 1.0


def estimate(
    objective: Objective,
    metrics: RunMetrics,
    confidence: float = DEFAULT_CONFIDENCE,
    order: OrderStatistics | None = None,
) -> Estimate:
    """The objective's stat with its interval (harness.judge.confidence), or why there is none.

    Client percentiles get order-statistic bounds, means normal bounds, the error and
    fallback rates Clopper-Pearson bounds, request and goodput rates Poisson bounds, each on
    the effective sample size the run's dependence leaves (its design effect, by batch
    means). A server histogram's percentile gets the bucket that holds it. Sampled series
    (GPU, queue depth) are autocorrelated, so no independent-sample interval applies: their
    stat is a point value.
    """
    metric = objective.definition
    if objective.stat == SHARE_STAT:
        return _share_estimate(objective, metrics, confidence)
    if metric.kind == "histogram":
        return _histogram_estimate(objective, metrics)
    if metric.kind == "scalar":
        n = metrics.attempted
        if metric.name not in metrics.scalars:
            why = metrics.missing.get(metric.name, "not measured in this run")
            return Estimate(None, n, missing=f"no {metric.name} data: {why}")
        value = metrics.scalars[metric.name]
        if value is None or not math.isfinite(value):
            why = "no requests attempted" if n == 0 else "no measured duration"
            return Estimate(None, n, missing=f"no {metric.name}: {why} in the measured window")
        deff = metrics.effects.get(metric.name, INDEPENDENT).inflation(confidence)
        interval = _scalar_interval(metric.name, metrics, confidence, deff)
        return Estimate(value, n, interval=interval, deff=deff)
    samples = metrics.samples.get(metric.name)
    if samples is None:
        why = metrics.missing.get(metric.name, "not collected in this run")
        return Estimate(None, 0, missing=f"no {metric.name} data: {why}")
    if samples.size == 0:
        source = _SOURCE.get(metric.name, "samples")
        if metric.source != "client":
            return Estimate(None, 0, missing=f"no {metric.name} samples in the measured window")
        return Estimate(None, 0, missing=f"no {metric.name} samples: the run had no {source}")
    if metric.source == "client":
        labels = metrics.batches.get(metric.name)
        q = percentile_of(objective.stat)
        if q is not None:
            order = order or OrderStatistics()
            est = _percentile_estimate(samples, labels, q, confidence, order)
            return _certified_at_thresholds(est, objective, samples, labels, q / 100.0, confidence)
        if objective.stat == "mean":
            deff = mean_effect(labels, samples).inflation(confidence)
            interval = mean_interval(samples, confidence, deff)
            return Estimate(float(np.mean(samples)), int(samples.size), interval, deff=deff)
    return Estimate(statistic(samples, objective.stat), int(samples.size))


def _percentile_estimate(
    samples: FloatArray,
    labels: Starts | None,
    q: float,
    confidence: float,
    order: OrderStatistics,
) -> Estimate:
    """A client percentile with bounds on the effective sample size.

    "Below x" is more dependent the nearer x lies to the median (tail events cluster less
    than central ones), so the bound on the median's side of the estimate (the lower bound
    of a p90) takes the mean of the design effects at the estimate and where the bound lies,
    when the latter is larger.
    """
    point = percentile(samples, q, order)
    deff = share_effect(labels, samples <= point).inflation(confidence)
    value, (low, high) = percentile_with_interval(samples, q, confidence, order, deff)
    inner = 0 if q >= 50.0 else 1
    bound = (low, high)[inner]
    at = share_effect(labels, samples <= bound).inflation(confidence) if math.isfinite(bound) else 0
    if at > deff:  # halfway: the bound moves, and with it where "below x" is measured
        halfway = (at + deff) / 2.0
        moved = percentile_with_interval(samples, q, confidence, order, halfway)[1][inner]
        low, high = (moved, high) if inner == 0 else (low, moved)
    interval = (low, high)
    return Estimate(value, int(samples.size), interval=interval, deff=deff)


def _certified_at_thresholds(
    est: Estimate,
    objective: Objective,
    samples: FloatArray,
    labels: Starts | None,
    q: float,
    confidence: float,
) -> Estimate:
    """Tighten a percentile's bounds to the objective's own thresholds where the share of
    samples at or below one certifies its side, by test inversion at that point.

    "p90 < 2 s" is "at least 90 % of requests within 2 s": the Clopper-Pearson bound on the
    share at or under 2 s, with the design effect measured at 2 s, decides it. The interval
    around the estimate takes its design effect at the estimate, which for a narrow, drifting
    latency distribution can be far larger than where a distant threshold lies. With no
    sample beyond a threshold there is nothing to measure clustering on, and the share there
    is taken as independent, as for an error rate with no errors.
    """
    assert est.interval is not None
    low, high = est.interval
    n = int(samples.size)
    for t in thresholds(objective):
        if not low < t < high:
            continue
        hits = samples <= t
        k = int(np.count_nonzero(hits))
        deff = share_effect(labels, hits).inflation(confidence)
        share_low, share_high = share_interval(k, n, confidence, deff)
        if share_low >= q:  # at least q of the requests within t: the q-quantile is at most t
            high = t
        elif share_high < q:  # fewer than q within t: the q-quantile lies above t
            low = t
    if (low, high) == est.interval:
        return est
    return replace(est, interval=(low, high))


def _scalar_interval(
    name: str, metrics: RunMetrics, confidence: float, deff: float
) -> tuple[float, float] | None:
    if name == "error_rate":
        return share_interval(metrics.failed, metrics.attempted, confidence, deff)
    if name == "fallback_rate":
        return share_interval(metrics.fallbacks, metrics.attempted, confidence, deff)
    duration = metrics.duration_s
    if duration is None or duration <= 0:
        return None
    if name == "request_rate":
        return rate_interval(metrics.succeeded, duration, confidence, deff)
    if name == "goodput":
        return rate_interval(metrics.good, duration, confidence, deff)
    return None  # token rates are not Poisson counts; server counters have no sample count


def more_data(
    objective: Objective, metrics: RunMetrics, est: Estimate, confidence: float
) -> str | None:
    """How many requests (or seconds) would decide an objective whose interval straddles a
    bound, if the run went on as measured; None where more data cannot help."""
    assert est.value is not None
    assert est.interval is not None
    bound = _straddled(objective, est.interval, est.value)
    metric = objective.definition
    if bound is None or metric.kind == "histogram":
        return None
    attempted = max(metrics.attempted, 1)
    needed: int | None = None
    scale = max(est.deff, 1.0)  # each effective sample costs deff real ones
    if metric.name in ("error_rate", "fallback_rate"):
        found = requests_for_share(est.value, bound, confidence)
        needed = math.ceil(found * scale) if found is not None else None
    elif objective.stat == SHARE_STAT:
        samples = metrics.samples.get(metric.name)
        n_samples = requests_for_share(est.value, bound, confidence)
        if n_samples is None or samples is None or samples.size == 0:
            return None
        needed = math.ceil(n_samples * scale * attempted / samples.size)
    elif metric.name in ("request_rate", "goodput"):
        seconds = duration_for_rate(est.value, bound, confidence)
        measured = metrics.duration_s or 0.0
        if seconds is None:
            return None
        seconds *= scale
        return (
            f"about {seconds:.0f} s of measurement would decide ({seconds - measured:+.0f} s), "
            "if the rate stays as measured"
        )
    else:
        samples = metrics.samples.get(metric.name)
        if samples is None or samples.size == 0:
            return None
        q = percentile_of(objective.stat)
        if q is not None:
            share = float(np.count_nonzero(samples <= bound)) / samples.size
            n_samples = samples_for_percentile(share, q / 100.0, confidence)
        elif objective.stat == "mean" and samples.size > 1:
            sd = float(np.std(samples, ddof=1))
            n_samples = samples_for_mean(est.value, sd, bound, confidence)
        else:
            return None
        if n_samples is None:
            return None
        needed = math.ceil(n_samples * scale * attempted / samples.size)  # per request
    if needed is None:
        return None
    more = max(needed - metrics.attempted, 0)
    return (
        f"about {needed:,} requests would decide ({more:,} more than the "
        f"{metrics.attempted:,} measured), if the run goes on as measured"
    )


def thresholds(objective: Objective) -> list[float]:
    """The values an objective's classification turns on: its target (both ends of a band)
    and its alert."""
    target = objective.target
    points = [target.min, target.max] if isinstance(target, Band) else [target]
    if objective.alert is not None:
        points.append(objective.alert)
    return points


def _straddled(objective: Objective, interval: tuple[float, float], value: float) -> float | None:
    """The target or alert bound inside the interval, the one nearest the estimate."""
    lo, hi = interval
    inside = [b for b in thresholds(objective) if lo <= b <= hi]
    return min(inside, key=lambda b: abs(b - value)) if inside else None


def _share_estimate(objective: Objective, metrics: RunMetrics, confidence: float) -> Estimate:
    """The share of samples at or under the objective's bound: Clopper-Pearson bounds for
    client samples, the bucket bracket for a server histogram (exact on a bucket bound), a
    point value for sampled series."""
    name = objective.definition.name
    bound = objective.bound
    assert bound is not None  # the policy pairs share_under with a bound
    hist = metrics.histograms.get(name)
    if objective.definition.kind == "histogram":
        if hist is None or hist.count <= 0:
            why = metrics.missing.get(name, "no observations in the measured window")
            return Estimate(None, 0, missing=f"no {name} data: {why}")
        found = hist.share_under(bound)
        assert found is not None
        return Estimate(found[0], round(hist.count), interval=(found[1], found[2]))
    samples = metrics.samples.get(name)
    if samples is None or samples.size == 0:
        why = metrics.missing.get(name, "no samples in the measured window")
        return Estimate(None, 0, missing=f"no {name} data: {why}")
    n = int(samples.size)
    hits = samples <= bound
    k = int(np.count_nonzero(hits))
    if objective.definition.source != "client":
        return Estimate(k / n, n)
    deff = share_effect(metrics.batches.get(name), hits).inflation(confidence)
    return Estimate(k / n, n, interval=share_interval(k, n, confidence, deff), deff=deff)


def _histogram_estimate(objective: Objective, metrics: RunMetrics) -> Estimate:
    name = objective.definition.name
    hist = metrics.histograms.get(name)
    if hist is None:
        why = metrics.missing.get(name, "not collected in this run")
        return Estimate(None, 0, missing=f"no {name} data: {why}")
    n = round(hist.count)
    if hist.count <= 0:
        return Estimate(None, 0, missing=f"no {name} observations in the measured window")
    if objective.stat == "mean":
        mean = hist.mean
        return Estimate(mean, n) if mean is not None else Estimate(None, n, missing="no sum")
    q = percentile_of(objective.stat)
    assert q is not None  # the policy checked the stat
    found = hist.quantile(q / 100.0)
    if found is None:
        return Estimate(None, n, missing=f"no {name} observations in the measured window")
    value, lower, upper = found
    return Estimate(value, n, interval=(lower, upper))
