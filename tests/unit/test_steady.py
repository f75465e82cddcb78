"""Steady state and per-window objectives on hand-built record tables."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from harness.errors import ConfigError
from harness.judge.analysis import analyse
from harness.judge.classify import evaluate
from harness.judge.steady import holds_of, steady_state, window_metrics
from harness.judge.verdict import Classification, Decision
from harness.records.log import RECORD_SCHEMA
from harness.spec.config import validate
from harness.spec.load import LoadSpec
from harness.spec.policy import Policy


def table(
    n: int,
    seconds: float,
    e2el: np.ndarray | float = 0.3,
    seed: int = 0,
    sent: np.ndarray | None = None,
) -> pa.Table:
    """n successful streamed requests sent evenly over ``seconds`` (or at ``sent``), with
    these latencies."""
    rng = np.random.default_rng(seed)
    sent = np.sort(rng.uniform(0.0, seconds, n)) if sent is None else np.sort(sent)
    lat = np.broadcast_to(np.asarray(e2el, dtype=np.float64), (n,)) * rng.uniform(0.9, 1.1, n)
    rows = [
        {"request_id": i, "worker": "w", "phase": "measure", "stream": True,
         "wall_sent": 1.7e9 + s, "t_sent": s, "t_first": s + 0.02, "t_last": s + d,
         "t_done": s + d + 0.001, "chunk_times": [s + 0.02, s + d], "prompt_tokens": 8,
         "output_tokens": 2, "status": 200, "error": None}
        for i, (s, d) in enumerate(zip(sent.tolist(), lat.tolist(), strict=True))
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def test_a_steady_run_is_steady() -> None:
    check = steady_state(table(3000, 30.0), 0.0, 30.0)
    assert check.ok is True, check.detail
    assert "successful request rate" in check.detail


def test_a_rate_that_collapses_is_not_steady() -> None:
    early = table(2000, 18.0)
    late = table(200, 12.0, seed=1)
    shifted = late.set_column(
        late.schema.get_field_index("t_sent"), "t_sent",
        pa.array(np.asarray(late["t_sent"].to_pylist()) + 18.0),
    )  # fmt: skip
    check = steady_state(pa.concat_tables([early, shifted]), 0.0, 30.0)
    assert check.ok is False
    assert "rate moved" in check.detail


def test_latency_that_keeps_rising_is_not_steady() -> None:
    sent_order = np.linspace(0.3, 0.9, 3000)  # the median triples across the run
    check = steady_state(table(3000, 30.0, e2el=sent_order), 0.0, 30.0)
    assert check.ok is False
    assert "drifted" in check.detail


def test_too_few_requests_cannot_tell() -> None:
    check = steady_state(table(20, 30.0), 0.0, 30.0)
    assert check.ok is None


def test_an_objective_per_window_catches_the_bad_minute_the_whole_run_hides() -> None:
    # The last of six windows is ten times slower. (Were the slow stretch only part of a
    # window, its requests would be dependent in time, and the window's p50 honestly undecided.)
    lat = np.where(np.arange(6000) >= 5000, 3.0, 0.3)
    records = table(6000, 60.0, e2el=lat)
    policy = Policy.model_validate({
        "name": "windows",
        "objectives": [
            {"name": "whole", "metric": "e2el", "stat": "p50", "target": "1s"},
            {"name": "each", "metric": "e2el", "stat": "p50", "target": "1s", "window": "10s"},
        ],
    })  # fmt: skip
    windows = {10.0: window_metrics(records, 0.0, 60.0, 10.0, {})}
    verdict = evaluate(policy, analyse(records, 0.0, 60.0), windows=windows)
    whole, each = verdict.objectives
    assert whole.verdict is Classification.PASS
    assert each.verdict is Classification.FAIL
    assert each.reason.startswith("5/6 windows of 10 s pass (each at 99.17 %); worst (50–60 s)")
    assert verdict.decision is Decision.FAIL


def test_the_worst_window_is_worst_in_the_metrics_bad_direction() -> None:
    # The first window is half slow, the middle one all slow: both fail a share under 1 s
    # (higher is better), and the worst is the middle one, with the lowest share.
    lat = np.where((np.arange(3000) >= 500) & (np.arange(3000) < 2000), 1.5, 0.3)
    records = table(3000, 30.0, e2el=lat)
    policy = Policy.model_validate({
        "name": "share",
        "objectives": [{"name": "within", "metric": "e2el", "stat": "share_under",
                        "bound": "1s", "target": "99%", "window": "10s"}],
    })  # fmt: skip
    windows = {10.0: window_metrics(records, 0.0, 30.0, 10.0, {})}
    (result,) = evaluate(policy, analyse(records, 0.0, 30.0), windows=windows).objectives
    assert result.verdict is Classification.FAIL
    assert "worst (10–20 s)" in result.reason
    assert result.estimate is not None
    assert result.estimate < 0.1  # the slow window's share, not a fast one's (1.0)


def test_each_window_is_judged_at_a_bonferroni_share_of_the_confidence() -> None:
    # 3 windows at 0.95 overall: each at 1 - 0.05 / 3. A p99 needs 299 samples at 0.95 but
    # more at 0.9833, so 320 error-free fast requests a window pass alone and not in three.
    records = table(960, 30.0, e2el=np.full(960, 0.3))
    obj = {"name": "p99", "metric": "e2el", "stat": "p99", "target": "1s"}
    alone = Policy.model_validate({"name": "a", "objectives": [{**obj, "window": "30s"}]})
    three = Policy.model_validate({"name": "b", "objectives": [{**obj, "window": "10s"}]})
    m = analyse(records, 0.0, 30.0)
    one = {30.0: window_metrics(records, 0.0, 30.0, 30.0, {})}
    split = {10.0: window_metrics(records, 0.0, 30.0, 10.0, {})}
    assert evaluate(alone, m, windows=one).objectives[0].verdict is Classification.PASS
    (each,) = evaluate(three, m, windows=split).objectives
    assert each.verdict is Classification.INCONCLUSIVE
    assert "(each at 98.33 %)" in each.reason


def test_windows_cover_the_measured_period() -> None:
    windows = window_metrics(table(600, 24.0), 0.0, 24.0, 10.0, {})
    assert [(lo, hi) for lo, hi, _ in windows] == [(0.0, 10.0), (10.0, 24.0)]  # 4 s joins
    assert sum(m.attempted for _, _, m in windows) == 600


def test_only_client_metrics_have_windows() -> None:
    data = {"name": "p", "objectives": [
        {"name": "g", "metric": "gpu.utilization", "stat": "mean", "target": 0.5,
         "window": "30s"}]}  # fmt: skip
    with pytest.raises(ConfigError, match="window"):
        validate(Policy, data, "p.yaml")


def test_a_staged_load_is_judged_stage_by_stage_with_ramps_left_out() -> None:
    # 20 s at 20 req/s, a 10 s ramp, 20 s at 80 req/s: the shape of scenarios/steps.yaml.
    load = LoadSpec.model_validate({
        "arrival": {"type": "poisson", "rate": 20},
        "stages": [{"duration_s": 20, "rate": 20}, {"duration_s": 10, "rate": 80, "ramp": True},
                   {"duration_s": 20, "rate": 80}],
    })  # fmt: skip
    low = table(400, 20.0)
    # The ramp: send times whose density rises with the rate.
    ramp = table(500, 10.0, seed=1, sent=20.0 + 10.0 * np.sqrt(np.linspace(0.0, 1.0, 500)))
    high = table(1600, 20.0, seed=2, sent=np.random.default_rng(2).uniform(30.0, 50.0, 1600))
    records = pa.concat_tables([low, ramp, high])
    holds = holds_of(load, t_start=0.0)
    assert holds == [(0.0, 20.0), (30.0, 50.0)]
    whole = steady_state(records, 0.0, 50.0)
    assert whole.ok is False  # the rate quadrupled: the scenario, read as drift
    staged = steady_state(records, 0.0, 50.0, holds=holds)
    assert staged.ok is True, staged.detail
    assert staged.detail.startswith("2/2 stages judged (ramps excluded)")


def test_a_stage_that_drifts_is_still_caught() -> None:
    load = LoadSpec.model_validate({
        "arrival": {"type": "poisson", "rate": 20},
        "stages": [{"duration_s": 30, "rate": 100}],
    })  # fmt: skip
    lat = np.where(np.arange(3000) >= 2400, 3.0, 0.3)
    check = steady_state(table(3000, 30.0, e2el=lat), 0.0, 30.0, holds=holds_of(load, 0.0))
    assert check.ok is False
    assert "drifted" in check.detail
