"""Saturation: a load generator that could not keep up must never produce a verdict.

A gevent load generator timestamps chunks and sends arrivals from one event loop. When that
loop is busy, every greenlet wakes late, so every timestamp is late: the latencies measure
the client, not the server. `assess` turns a generator's report (and the dispatch lag computed
from records) into the reasons the run is INVALID (exit 4); `saturation_reason` does it for
every generator a manifest lists, so `harness evaluate` reaches the same INVALID as the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.judge.confidence import order_ranks
from harness.records.generator import LAG_LIMIT_S, GuardReport
from harness.records.run_dir import Manifest


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Where a load generator stops being trustworthy (measured with Locust on 2 cores).

    lag_p99_s, 10 ms: measured here, greenlet wake-up lag p99 tracks the ITL error of the
    streams the loop reads: 1.3 ms at 64 streams, 3.3 ms at 256 (busy, still sound) and 27 ms
    at 512 (past the ~37 000 chunks/s one core can read). 10 ms is three times the busy-but-sound
    figure and well under the saturated one; above it one timestamp in a hundred is off by as
    much as a GPU's whole inter-token gap (10-50 ms). The check is on the evidence, not the
    point p99: more samples over 10 ms than 1 % of them could give by chance (the p99's lower
    bound at ``confidence``), so a 5 s run is not thrown out for two stalls of 20 ms that
    another process caused (2 of 107 samples: a point p99 of 10.3 ms).

    cpu_p95, 90 % of one core: a gevent process runs Python on one core whatever the machine
    has, and near full use the loop has no slack, so lag grows steeply with any burst (the
    queueing wait grows like u / (1 - u)). 90 % is also where Locust warns, but Locust samples
    every 10 s and was seen silent at 99 %; p95 of ~0.5 s windows catches a saturated stage
    without one slow window (a GC pass, a first-request import) invalidating a run.

    dispatch_lag_p99_s, 50 ms: one generator here holds 800 req/s with p99 dispatch lag 5 ms;
    ten times that means the arrival process the scenario asked for was not the one sent, and
    it is a tenth of the runbook's tightest latency target (p50 E2EL 500 ms).
    """

    lag_p99_s: float = LAG_LIMIT_S
    cpu_p95: float = 0.90
    dispatch_lag_p99_s: float = 0.050
    confidence: float = 0.95


def assess(
    report: GuardReport,
    dispatch_lag_p99_s: float | None = None,
    thresholds: Thresholds = Thresholds(),  # frozen: a shared default is safe
) -> list[str]:
    """The reasons the run is invalid, one sentence each; empty when the generator kept up.

    ``dispatch_lag_p99_s`` (send minus intended time, p99) must come only from arrivals that
    were not held back by the scenario's own concurrency cap, where lateness is by design;
    None when there were none (closed loop) or it was not computed.
    """
    reasons: list[str] = []
    lag = _lag_reason(report, thresholds)
    if lag:
        reasons.append(lag)
    cpu = report.cpu_p95
    if cpu is not None and cpu >= thresholds.cpu_p95:
        reasons.append(
            f"load generator CPU p95 {_pct(cpu)} of one core >= {_pct(thresholds.cpu_p95)}"
        )
    if dispatch_lag_p99_s is not None and dispatch_lag_p99_s > thresholds.dispatch_lag_p99_s:
        reasons.append(
            f"dispatch lag p99 {_ms(dispatch_lag_p99_s)} > "
            f"{_ms(thresholds.dispatch_lag_p99_s)}: arrivals were sent late"
        )
    return reasons


def _lag_reason(report: GuardReport, thresholds: Thresholds) -> str | None:
    """Why the loop's wake-up lag p99 is over the limit, or None when it is not shown to be.

    The guard samples the run's own time at jittered moments, so the count of samples over
    the limit is (at least as tight as) Binomial(n, f), f the share of the run's time in
    which an event would have waited longer than the limit: the p99 is over the limit when
    its order-statistic lower bound is, that is when at least n - j samples are, j the lower
    bound's rank. A report without the count (written before the guard kept it), or counted
    at another limit, is judged on its point p99."""
    lag, limit = report.lag_p99_s, thresholds.lag_p99_s
    if lag is None:
        return None
    saturated = f"load generator saturated: event-loop lag p99 {_ms(lag)} > {_ms(limit)}"
    late = "(timestamps would be late by that much)"
    over, n = report.lag_over, report.samples
    if over is None or report.lag_limit_s != limit:
        return f"{saturated} {late}" if lag > limit else None
    lower, _ = order_ranks(n, 0.99, thresholds.confidence)
    if lower is None or over < n - lower:
        return None
    return (
        f"{saturated}: {over} of {n} wake-ups over {_ms(limit)}, more than 1 % at "
        f"{_pct(thresholds.confidence)} confidence {late}"
    )


def saturation_reason(manifest: Manifest) -> str | None:
    """Why the load generators could not be trusted, from their guard reports, or None."""
    generators = manifest.load.get("generators")
    if not isinstance(generators, dict):
        return None
    reasons: list[str] = []
    for name, data in sorted(generators.items()):
        found = assess(GuardReport.from_dict(data), data.get("dispatch_lag_p99_s"))
        prefix = "" if len(generators) == 1 else f"{name}: "
        reasons += [prefix + reason for reason in found]
    return "; ".join(reasons) or None


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"
