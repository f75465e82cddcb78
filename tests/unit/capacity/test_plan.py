"""Replicas, autoscaling targets, cost and energy from one replica's capacity."""

from __future__ import annotations

import pytest

from harness.capacity.plan import cost_per_1k_tokens, energy_per_1k_tokens, fleet_plan


def test_replicas_carry_at_most_their_share_at_the_peak() -> None:
    plan = fleet_plan(capacity_rps=40.0, concurrency=20.0, peak_rps=100.0, headroom=0.2)
    assert plan.per_replica_rps == pytest.approx(32.0)
    assert (plan.min_replicas, plan.max_replicas) == (1, 4)  # 100 / 32 = 3.1
    predictor = plan.patch()["spec"]["predictor"]
    assert predictor == {"minReplicas": 1, "maxReplicas": 4, "scaleMetric": "concurrency",
                         "scaleTarget": 16}  # fmt: skip


def test_a_trough_sets_the_floor_and_an_exact_fit_needs_no_extra_replica() -> None:
    plan = fleet_plan(capacity_rps=10.0, concurrency=None, peak_rps=40.0, headroom=0.0,
                      trough_rps=15.0)  # fmt: skip
    assert (plan.min_replicas, plan.max_replicas) == (2, 4)
    assert plan.patch()["spec"]["predictor"]["scaleMetric"] == "rps"


def test_cost_and_energy_per_1000_tokens() -> None:
    # 2 GPUs at 3.6 an hour = 0.002 a second; 500 tokens/s -> 0.004 per 1 000 tokens
    assert cost_per_1k_tokens(3.6, 2, 500.0) == pytest.approx(0.004)
    assert energy_per_1k_tokens(energy_j=7000.0, output_tokens=20_000) == pytest.approx(350.0)
