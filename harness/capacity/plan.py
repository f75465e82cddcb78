"""What a capacity means for the fleet: replicas for a peak with headroom, an autoscaling
target on a signal that tracks GPU serving load, cost and energy per 1 000 output tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Why the runbook's CPU-based HPA is the wrong signal, said once wherever a plan is shown.
CPU_HPA_NOTE = (
    "a CPU-based HPA misleads for GPU serving: vLLM's CPU use stays nearly flat while the GPU "
    "batch fills and requests queue, so it scales late or never; scale on concurrency, "
    "request rate or requests waiting instead"
)


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """Replicas and autoscaling for a peak, from one replica's capacity."""

    peak_rps: float
    headroom: float
    per_replica_rps: float  # the load each replica is planned to carry: capacity x (1 - headroom)
    min_replicas: int
    max_replicas: int
    scale_concurrency: int | None  # KServe scaleMetric concurrency, scaleTarget
    scale_rps: float  # KServe scaleMetric rps, scaleTarget

    def to_json(self) -> dict[str, Any]:
        return {
            "peak_rps": self.peak_rps,
            "headroom": self.headroom,
            "per_replica_rps": self.per_replica_rps,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "inference_service_patch": self.patch(),
            "keda_hint": "scale on vllm:num_requests_waiting above 0 sustained for a minute "
            "(requests queue only when the batch is full)",
            "why_not_cpu": CPU_HPA_NOTE,
        }

    def patch(self) -> dict[str, Any]:
        """The InferenceService predictor fields to set."""
        predictor: dict[str, Any] = {"minReplicas": self.min_replicas,
                                     "maxReplicas": self.max_replicas}  # fmt: skip
        if self.scale_concurrency is not None:
            predictor |= {"scaleMetric": "concurrency", "scaleTarget": self.scale_concurrency}
        else:
            predictor |= {"scaleMetric": "rps", "scaleTarget": round(self.scale_rps, 2)}
        return {"spec": {"predictor": predictor}}


def fleet_plan(
    capacity_rps: float,
    concurrency: float | None,
    peak_rps: float,
    headroom: float,
    trough_rps: float | None = None,
) -> FleetPlan:
    """Replicas so that each carries at most ``1 - headroom`` of its capacity at the peak (and
    at the trough, for the floor; at least one); the scale target is that share of the
    in-flight requests a replica held at capacity (Little: rate x latency)."""
    per_replica = capacity_rps * (1.0 - headroom)
    at_peak = max(1, math.ceil(peak_rps / per_replica - 1e-9))
    floor = max(1, math.ceil((trough_rps or 0.0) / per_replica - 1e-9))
    target = None
    if concurrency is not None and concurrency > 0:
        target = max(1, math.floor(concurrency * (1.0 - headroom)))
    return FleetPlan(peak_rps, headroom, per_replica, min(floor, at_peak), at_peak, target,
                     per_replica)  # fmt: skip


def cost_per_1k_tokens(gpu_hour_price: float, gpus: int, output_tokens_per_s: float) -> float:
    """Price of 1 000 output tokens from one replica at its capacity."""
    return gpu_hour_price * gpus / 3600.0 / output_tokens_per_s * 1000.0


def energy_per_1k_tokens(energy_j: float, output_tokens: float) -> float:
    """Joules per 1 000 output tokens, as the GPUs measured them over a probe."""
    return energy_j / output_tokens * 1000.0
