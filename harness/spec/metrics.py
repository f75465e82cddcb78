"""Every metric the judge knows, declared once: name, unit, better direction, source, stats.

An SLO objective names a metric; which way is better comes from here, never from the user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from harness.spec.quantity import Dimension

Better = Literal["lower", "higher"]
MetricKind = Literal["distribution", "scalar", "histogram"]
Source = Literal["client", "gpu", "server", "gateway"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """A metric's declaration: what it measures and how to compare it."""

    name: str
    unit: str  # "s", "ratio", "1/s", "%"
    dimension: Dimension
    better: Better
    # distribution: per-sample values (pXX, mean, max, min); scalar: one value per run;
    # histogram: a server's bucket counts over the window (pXX as a bucket, mean exact)
    kind: MetricKind
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
    MetricDef("fallback_rate", "ratio", "ratio", "lower", "scalar", "client",
              "requests a gateway served by a fallback, or by another deployment than "
              "target.expect_backend, / attempted"),
    MetricDef("request_rate", "1/s", "per_second", "higher", "scalar", "client",
              "completed requests per second"),
    MetricDef("output_token_rate", "1/s", "per_second", "higher", "scalar", "client",
              "generated tokens per second (server usage)"),
    MetricDef("goodput", "1/s", "per_second", "higher", "scalar", "client",
              "completed requests per second meeting every per-request SLO"),
    # GPU samples (NVML on this machine, or DCGM through Prometheus), pooled over GPUs.
    MetricDef("gpu.utilization", "ratio", "ratio", "lower", "distribution", "gpu",
              "GPU busy fraction sampled over the run (NVML or DCGM)"),
    MetricDef("gpu.memory_utilization", "ratio", "ratio", "lower", "distribution", "gpu",
              "memory-controller busy fraction (NVML)"),
    MetricDef("gpu.memory_used", "bytes", "bytes", "lower", "distribution", "gpu",
              "GPU memory in use"),
    MetricDef("gpu.power", "W", "watts", "lower", "distribution", "gpu", "board power draw"),
    MetricDef("gpu.temperature", "C", "celsius", "lower", "distribution", "gpu",
              "GPU temperature"),
    MetricDef("gpu.sm_clock", "Hz", "hertz", "higher", "distribution", "gpu",
              "SM clock (a falling clock under load means throttling)"),
    MetricDef("gpu.energy", "J", "joules", "lower", "scalar", "gpu",
              "energy used by the GPUs over the measured window, summed"),
    # The engine's own view (vLLM /metrics names; llama.cpp has no histograms).
    MetricDef("server.ttft", "s", "seconds", "lower", "histogram", "server",
              "engine time to first token (vllm:time_to_first_token_seconds)"),
    MetricDef("server.itl", "s", "seconds", "lower", "histogram", "server",
              "engine inter-token latency (vllm:inter_token_latency_seconds)"),
    MetricDef("server.tpot", "s", "seconds", "lower", "histogram", "server",
              "engine time per output token (vllm:request_time_per_output_token_seconds)"),
    MetricDef("server.e2el", "s", "seconds", "lower", "histogram", "server",
              "engine end-to-end latency (vllm:e2e_request_latency_seconds)"),
    MetricDef("server.queue_time", "s", "seconds", "lower", "histogram", "server",
              "time in the engine's queue (vllm:request_queue_time_seconds)"),
    MetricDef("server.prefill_time", "s", "seconds", "lower", "histogram", "server",
              "time in prefill (vllm:request_prefill_time_seconds)"),
    MetricDef("server.decode_time", "s", "seconds", "lower", "histogram", "server",
              "time in decode (vllm:request_decode_time_seconds)"),
    MetricDef("server.queue_waiting", "count", "count", "lower", "distribution", "server",
              "requests waiting to be scheduled, sampled (> 0: saturated)"),
    MetricDef("server.requests_running", "count", "count", "higher", "distribution", "server",
              "requests in the running batch, sampled"),
    MetricDef("server.kv_cache_usage", "ratio", "ratio", "lower", "distribution", "server",
              "KV-cache usage 0-1, sampled (fullest engine)"),
    MetricDef("server.generation_token_rate", "1/s", "per_second", "higher", "scalar", "server",
              "tokens generated per second over the window, from the engine's counter"),
    MetricDef("server.prompt_token_rate", "1/s", "per_second", "higher", "scalar", "server",
              "prompt tokens processed per second over the window"),
    MetricDef("server.preemptions", "count", "count", "lower", "scalar", "server",
              "requests preempted during the window"),
    MetricDef("server.error_rate", "ratio", "ratio", "lower", "scalar", "server",
              "share of API answers that were not 2xx (else: finished aborted or in error)"),
    # The gateway's view (LiteLLM).
    MetricDef("gateway.e2el", "s", "seconds", "lower", "histogram", "gateway",
              "gateway end-to-end latency (litellm_request_total_latency_metric)"),
    MetricDef("gateway.ttft", "s", "seconds", "lower", "histogram", "gateway",
              "backend TTFT seen by the gateway (litellm_llm_api_time_to_first_token_metric)"),
    MetricDef("gateway.overhead", "s", "seconds", "lower", "histogram", "gateway",
              "latency the gateway added (litellm_overhead_latency_metric)"),
    MetricDef("gateway.backend_latency", "s", "seconds", "lower", "histogram", "gateway",
              "backend call latency seen by the gateway (litellm_llm_api_latency_metric)"),
    MetricDef("gateway.error_rate", "ratio", "ratio", "lower", "scalar", "gateway",
              "share of gateway requests that failed"),
    MetricDef("gateway.fallbacks", "count", "count", "lower", "scalar", "gateway",
              "requests the gateway served from a fallback (these hide backend errors)"),
)  # fmt: skip

METRICS: dict[str, MetricDef] = {m.name: m for m in _DEFS}

#: Earlier names still accepted in policy files (and stored runs), mapped to today's.
ALIASES = {"gpu_utilization": "gpu.utilization"}

_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")
SCALAR_STATS = ("value",)
DISTRIBUTION_STATS = ("mean", "max", "min")
HISTOGRAM_STATS = ("mean",)
SHARE_STAT = "share_under"  # the share of samples at or under an objective's bound


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
    if stat == SHARE_STAT:
        return None
    if metric.kind == "histogram":
        if stat in HISTOGRAM_STATS or percentile_of(stat) is not None:
            return None
        return "expected a percentile such as 'p50' or 'p99', or 'mean' (server histograms)"
    if stat in DISTRIBUTION_STATS or percentile_of(stat) is not None:
        return None
    return "expected a percentile such as 'p50', 'p99', 'p99.9', or one of mean, max, min"
