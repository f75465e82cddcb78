"""What the harness reads from each kind of server: one ``Family`` per canonical metric.

A family names the server's metric (newest name first, deprecated names after), its type,
how series from several pods or engines combine, and the scale to the base unit. The same
declaration drives the PromQL sent to Prometheus (``promql.py``) and the direct reading of a
``/metrics`` page (``snapshot.py``), so both modes measure the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ServerKind = Literal["vllm", "llamacpp", "litellm", "dcgm"]
FamilyType = Literal["histogram", "counter", "gauge"]
Combine = Literal["sum", "max", "none"]

MIB = 1024.0 * 1024.0


@dataclass(frozen=True, slots=True)
class Family:
    """One canonical metric read from one kind of server.

    ``combine``: how series from several pods/engines/GPUs merge: ``sum`` (queue depth,
    counters, histogram buckets), ``max`` (KV-cache usage: the fullest engine saturates
    first) or ``none`` (keep each series, e.g. one per GPU). ``by``: labels kept apart
    (finish reason, HTTP status). ``match``: label regexes a series must match (RE2 syntax,
    anchored as in PromQL).
    """

    metric: str
    names: tuple[str, ...]
    type: FamilyType
    combine: Combine = "sum"
    by: tuple[str, ...] = ()
    match: tuple[tuple[str, str], ...] = ()
    scale: float = 1.0
    unit: str = ""
    description: str = ""
    # Selector labels this family's series never carry (HTTP counters have no model_name):
    # left out of its matchers, or it could never match.
    unlabelled: tuple[str, ...] = ()

    def selector_for(self, selector: Mapping[str, str]) -> dict[str, str]:
        """The scenario's selector without the labels this family does not carry."""
        return {k: v for k, v in selector.items() if k not in self.unlabelled}

    def sample_names(self, name: str) -> tuple[str, ...]:
        """The exposition sample names of the family ``name`` (histograms have three)."""
        if self.type == "histogram":
            return (f"{name}_bucket", f"{name}_sum", f"{name}_count")
        return (name,)


_VLLM = (
    Family("server.ttft", ("vllm:time_to_first_token_seconds",), "histogram", unit="s",
           description="engine time to first token"),
    Family("server.itl", ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
           "histogram", unit="s", description="engine inter-token latency"),
    Family("server.tpot", ("vllm:request_time_per_output_token_seconds",), "histogram", unit="s",
           description="engine time per output token, per request"),
    Family("server.e2el", ("vllm:e2e_request_latency_seconds",), "histogram", unit="s",
           description="engine end-to-end request latency"),
    Family("server.queue_time", ("vllm:request_queue_time_seconds",), "histogram", unit="s",
           description="time requests waited in the engine's queue"),
    Family("server.prefill_time", ("vllm:request_prefill_time_seconds",), "histogram", unit="s",
           description="time requests spent in prefill"),
    Family("server.decode_time", ("vllm:request_decode_time_seconds",), "histogram", unit="s",
           description="time requests spent in decode"),
    Family("server.requests_running", ("vllm:num_requests_running",), "gauge", unit="count",
           description="requests in the running batch"),
    Family("server.queue_waiting", ("vllm:num_requests_waiting",), "gauge", unit="count",
           description="requests waiting to be scheduled (> 0: saturated)"),
    Family("server.kv_cache_usage", ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
           "gauge", combine="max", unit="ratio", description="KV-cache blocks in use (0-1)"),
    Family("server.prompt_tokens", ("vllm:prompt_tokens_total",), "counter", unit="tokens",
           description="prompt tokens processed"),
    Family("server.generation_tokens", ("vllm:generation_tokens_total",), "counter",
           unit="tokens", description="tokens generated"),
    Family("server.preemptions", ("vllm:num_preemptions_total",), "counter", unit="count",
           description="requests preempted (KV cache exhausted)"),
    Family("server.requests", ("vllm:request_success_total",), "counter", by=("finished_reason",),
           unit="count", description="finished requests by finish reason"),
    Family("server.http_requests", ("http_requests_total",), "counter", by=("status",),
           match=(("handler", "/v1/(chat/)?completions"),), unlabelled=("model_name", "engine"),
           unit="count",
           description="OpenAI API answers by HTTP status class"),
)  # fmt: skip

_LLAMACPP = (
    Family("server.prompt_tokens", ("llamacpp:prompt_tokens_total",), "counter", unit="tokens",
           description="prompt tokens processed"),
    Family("server.generation_tokens", ("llamacpp:tokens_predicted_total",), "counter",
           unit="tokens", description="tokens generated"),
    Family("server.requests_running", ("llamacpp:requests_processing",), "gauge", unit="count",
           description="requests being processed (busy slots)"),
    Family("server.queue_waiting", ("llamacpp:requests_deferred",), "gauge", unit="count",
           description="requests deferred for want of a free slot"),
    Family("server.kv_cache_usage", ("llamacpp:kv_cache_usage_ratio",), "gauge", combine="max",
           unit="ratio", description="KV cache in use (0-1)"),
    Family("server.decode_calls", ("llamacpp:n_decode_total",), "counter", unit="count",
           description="llama_decode() calls"),
)  # fmt: skip

_LITELLM = (
    Family("gateway.e2el", ("litellm_request_total_latency_metric",), "histogram", unit="s",
           description="gateway end-to-end request latency"),
    Family("gateway.backend_latency", ("litellm_llm_api_latency_metric",), "histogram", unit="s",
           description="latency of the backend call as the gateway saw it"),
    Family("gateway.ttft", ("litellm_llm_api_time_to_first_token_metric",), "histogram",
           unit="s", description="backend time to first token as the gateway saw it"),
    Family("gateway.overhead", ("litellm_overhead_latency_metric",), "histogram", unit="s",
           description="latency the gateway itself added"),
    Family("gateway.queue_time", ("litellm_request_queue_time_seconds",), "histogram", unit="s",
           description="time requests waited in the gateway's queue"),
    Family("gateway.prompt_tokens", ("litellm_input_tokens_metric_total",), "counter",
           unit="tokens", description="prompt tokens the gateway counted"),
    Family("gateway.generation_tokens", ("litellm_output_tokens_metric_total",), "counter",
           unit="tokens", description="output tokens the gateway counted"),
    Family("gateway.requests", ("litellm_proxy_total_requests_metric_total",), "counter",
           by=("status_code",), unit="count", description="requests by HTTP status"),
    Family("gateway.failed_requests", ("litellm_proxy_failed_requests_metric_total",), "counter",
           by=("exception_status",), unit="count", description="failed requests by status"),
    Family("gateway.deployment_failures", ("litellm_deployment_failure_responses_total",),
           "counter", unit="count", description="failed calls to backends"),
    Family("gateway.fallbacks", ("litellm_deployment_successful_fallbacks_total",), "counter",
           unit="count", description="requests served by a fallback (hides backend errors)"),
    Family("gateway.deployment_state", ("litellm_deployment_state",), "gauge", combine="max",
           unit="count", description="0 healthy, 1 partial outage, 2 complete outage"),
)  # fmt: skip

_DCGM = (
    Family("gpu.utilization", ("DCGM_FI_DEV_GPU_UTIL",), "gauge", combine="none", scale=0.01,
           unit="ratio", description="GPU busy fraction"),
    Family("gpu.memory_used", ("DCGM_FI_DEV_FB_USED",), "gauge", combine="none", scale=MIB,
           unit="bytes", description="frame buffer in use"),
    Family("gpu.power", ("DCGM_FI_DEV_POWER_USAGE",), "gauge", combine="none", unit="W",
           description="board power draw"),
    # A counter to dcgm-exporter, so the text parser reads its samples as ..._total.
    Family("gpu.energy", ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
                          "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total"), "gauge", combine="none",
           scale=1e-3, unit="J", description="energy since the driver loaded (cumulative)"),
    Family("gpu.temperature", ("DCGM_FI_DEV_GPU_TEMP",), "gauge", combine="none", unit="C",
           description="GPU temperature"),
    Family("gpu.sm_clock", ("DCGM_FI_DEV_SM_CLOCK",), "gauge", combine="none", scale=1e6,
           unit="Hz", description="SM clock"),
    Family("gpu.tensor_active", ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",), "gauge", combine="none",
           unit="ratio", description="fraction of cycles the tensor pipes were active"),
)  # fmt: skip

FAMILIES: dict[ServerKind, tuple[Family, ...]] = {
    "vllm": _VLLM,
    "llamacpp": _LLAMACPP,
    "litellm": _LITELLM,
    "dcgm": _DCGM,
}

#: Labels that say which GPU a DCGM series is (kept; the rest are the exporter's noise).
GPU_LABELS = ("Hostname", "gpu", "UUID")

#: What tells the kinds apart on a /metrics page: a name prefix each one alone uses.
_SIGNATURES: tuple[tuple[str, ServerKind], ...] = (
    ("vllm:", "vllm"),
    ("llamacpp:", "llamacpp"),
    ("litellm_", "litellm"),
    ("DCGM_FI_", "dcgm"),
)


def detect_kind(names: set[str] | frozenset[str]) -> ServerKind | None:
    """The server kind whose metric names appear in ``names``, or None."""
    for prefix, kind in _SIGNATURES:
        if any(name.startswith(prefix) for name in names):
            return kind
    return None


def series_key(family: Family, labels: dict[str, str]) -> str:
    """The key a series is kept under after combining: '' or the ``by`` / GPU labels."""
    if family.combine == "none":
        keep = [k for k in GPU_LABELS if k in labels] or sorted(
            k for k in labels if k not in ("__name__", "instance", "job")
        )
    else:
        keep = list(family.by)
    return ",".join(f"{k}={labels.get(k, '')}" for k in keep)
