"""The simulator's ``/metrics``: vLLM's own names, labels and buckets.

The harness reads a real vLLM and the simulator with the same queries, so the names,
labels (``model_name``, ``engine``) and histogram buckets follow vLLM v1 exactly
(docs/collectors.md lists them). Values are what the simulated engine did, timed on the
server's monotonic clock. One extra family, ``harness_sim_step_lag_seconds``, says
how late engine steps start, i.e. whether the simulator itself kept up.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
REQUEST_LATENCY_BUCKETS = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
STEP_LAG_BUCKETS = (
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
)  # fmt: skip

HTTP_HANDLERS = (
    "/v1/models", "/v1/chat/completions", "/v1/completions", "/metrics", "/health",
)  # fmt: skip
"""Handlers reported by name; anything else is reported as "none"."""


def buckets_1_2_5(max_value: int) -> tuple[float, ...]:
    """1, 2, 5, 10, 20, 50, ... up to max_value, as vLLM builds token-count buckets."""
    out: list[float] = []
    exponent = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * exponent
            if value > max_value:
                return tuple(out)
            out.append(float(value))
        exponent *= 10


@dataclass(frozen=True, slots=True)
class RequestTimes:
    """Monotonic timestamps of a finished request, in seconds."""

    arrival: float
    scheduled: float
    first_token: float
    last_token: float


class SimMetrics:
    """Every metric family of the simulator, in a registry of its own."""

    def __init__(self, model_name: str, max_model_len: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, labels = self.registry, ("model_name", "engine")
        values = (model_name, "0")

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, registry=r, buckets=buckets).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, labels, registry=r).labels(*values)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, labels, registry=r).labels(*values)

        self.ttft = hist(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token.", TTFT_BUCKETS
        )
        self.itl = hist(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency.", ITL_BUCKETS
        )
        self.tpot = hist(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time per output token, per request.",
            ITL_BUCKETS,
        )
        self.e2e = hist(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end-to-end request latency.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.queue_time = hist(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent waiting before first scheduled.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.inference_time = hist(
            "vllm:request_inference_time_seconds",
            "Histogram of time from first scheduled to last token.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.prefill_time = hist(
            "vllm:request_prefill_time_seconds",
            "Histogram of time from first scheduled to first token.",
            REQUEST_LATENCY_BUCKETS,
        )
        self.decode_time = hist(
            "vllm:request_decode_time_seconds",
            "Histogram of time from first token to last token.",
            REQUEST_LATENCY_BUCKETS,
        )
        token_buckets = buckets_1_2_5(max_model_len)
        self.request_prompt_tokens = hist(
            "vllm:request_prompt_tokens", "Prompt tokens per request.", token_buckets
        )
        self.request_generation_tokens = hist(
            "vllm:request_generation_tokens", "Generated tokens per request.", token_buckets
        )
        self.num_running = gauge("vllm:num_requests_running", "Requests in the running batch.")
        self.num_waiting = gauge("vllm:num_requests_waiting", "Requests waiting to run.")
        self.kv_cache_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage, 1 means full.")
        self.preemptions = counter("vllm:num_preemptions", "Cumulative preemptions.")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Prefilled prompt tokens.")
        self.generation_tokens = counter("vllm:generation_tokens", "Generated tokens.")
        self.prefix_cache_queries = counter(
            "vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache."
        )
        self.prefix_cache_hits = counter(
            "vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache."
        )
        success = Counter(
            "vllm:request_success",
            "Finished requests, by finish reason.",
            (*labels, "finished_reason"),
            registry=r,
        )
        self.request_success = {
            reason: success.labels(*values, reason) for reason in ("stop", "length", "abort")
        }
        self._http = Counter(
            "http_requests_total",
            "HTTP requests by handler, method and status class.",
            ("handler", "method", "status"),
            registry=r,
        )
        self.step_lag = Histogram(
            "harness_sim_step_lag_seconds",
            "How late engine steps start against their schedule.",
            registry=r,
            buckets=STEP_LAG_BUCKETS,
        )

    def observe_http(self, path: str, method: str, status: int) -> None:
        handler = path if path in HTTP_HANDLERS else "none"
        self._http.labels(handler, method, f"{status // 100}xx").inc()

    def observe_finished(
        self,
        times: RequestTimes,
        finished: float,
        prompt_tokens: int,
        generation_tokens: int,
        reason: str,
    ) -> None:
        """Record a request the engine finished, with the request-level histograms."""
        self.request_success[reason].inc()
        self.ttft.observe(times.first_token - times.arrival)
        self.e2e.observe(finished - times.arrival)
        self.queue_time.observe(times.scheduled - times.arrival)
        self.prefill_time.observe(times.first_token - times.scheduled)
        self.inference_time.observe(times.last_token - times.scheduled)
        decode = times.last_token - times.first_token
        self.decode_time.observe(decode)
        if generation_tokens > 1:
            self.tpot.observe(decode / (generation_tokens - 1))
        self.request_prompt_tokens.observe(prompt_tokens)
        self.request_generation_tokens.observe(generation_tokens)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
