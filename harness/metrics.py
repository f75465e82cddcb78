"""Every metric the judge knows, declared once: name, unit, better direction, source, stats.

An SLO objective names a metric; which way is better comes from here, never from the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from harness.quantity import Dimension

Better = Literal["lower", "higher"]
Kind = Literal["distribution", "scalar"]
Source = Literal["client", "gpu", "server"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """A metric's declaration: what it measures and how to compare it."""

    name: str
    unit: str  # "s", "ratio", "1/s", "%"
    dimension: Dimension
    better: Better
    kind: Kind  # distribution: per-sample values (pXX, mean, max, min); scalar: one value
    source: Source
    description: str


_DEFS = (
    MetricDef("ttft", "s", "seconds", "lower", "distribution", "client",
              "time to first token: send -> first chunk with generated content"),
    MetricDef("tpot", "s", "seconds", "lower", "distribution", "client",
              "time per output token: (E2EL - TTFT) / (output_tokens - 1)"),
    MetricDef("itl", "s", "seconds", "lower", "distribution", "client",
              "inter-token latency: every gap between consecutive content chunks, pooled"),
    MetricDef("e2el", "s", "seconds", "lower", "distribution", "client",
              "end-to-end latency: send -> last content chunk"),
    MetricDef("ttft_intended", "s", "seconds", "lower", "distribution", "client",
              "TTFT from the intended send time (open-loop; free of coordinated omission)"),
    MetricDef("e2el_intended", "s", "seconds", "lower", "distribution", "client",
              "E2EL from the intended send time (open-loop; free of coordinated omission)"),
    MetricDef("schedule_lag", "s", "seconds", "lower", "distribution", "client",
              "actual send - intended send (load-generator lag)"),
    MetricDef("error_rate", "ratio", "ratio", "lower", "scalar", "client",
              "failed / attempted requests"),
    MetricDef("request_rate", "1/s", "per_second", "higher", "scalar", "client",
              "completed requests per second"),
    MetricDef("output_token_rate", "1/s", "per_second", "higher", "scalar", "client",
              "generated tokens per second (server usage)"),
    MetricDef("goodput", "1/s", "per_second", "higher", "scalar", "client",
              "completed requests per second meeting every per-request SLO"),
    MetricDef("gpu_utilization", "ratio", "ratio", "lower", "distribution", "gpu",
              "GPU busy fraction sampled over the run (NVML or DCGM)"),
)  # fmt: skip

METRICS: dict[str, MetricDef] = {m.name: m for m in _DEFS}

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
SCALAR_STATS = ("value",)
DISTRIBUTION_STATS = ("mean", "max", "min")


def percentile_of(stat: str) -> float | None:
    """The percentile q in (0, 100) a stat names ("p99" -> 99.0, "p99.9" -> 99.9), else None."""
    match = _PERCENTILE.match(stat)
    if not match:
        return None
    q = float(match.group(1))
    return q if 0.0 < q < 100.0 else None


def check_stat(metric: MetricDef, stat: str) -> str | None:
    """None when stat applies to metric, else what was expected."""
    if metric.kind == "scalar":
        if stat in SCALAR_STATS:
            return None
        return f"metric {metric.name!r} is a single value per run: use stat 'value'"
    if stat in DISTRIBUTION_STATS or percentile_of(stat) is not None:
        return None
    return "expected a percentile such as 'p50', 'p99', 'p99.9', or one of mean, max, min"
