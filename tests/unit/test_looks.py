"""Early-stop looks from running tallies: the same numbers as the exact judge, to the bins'
resolution, whatever the order and the number of looks."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from support.serving_data import Shape, run

from harness.judge.analysis import analyse
from harness.judge.confidence import order_ranks
from harness.judge.early import EarlyJudge
from harness.judge.estimate import estimate
from harness.judge.looks import BINS, MAX_BATCHES, LookTallies, bin_of
from harness.records.record import RequestRecord
from harness.spec.load import LoadSpec
from harness.spec.policy import Objective, Policy

OBJECTIVES = [
    Objective(name="ttft-p50", metric="ttft", stat="p50", target=1.0),
    Objective(name="ttft-p99", metric="ttft", stat="p99", target=1.0),
    Objective(name="itl-p90", metric="itl", stat="p90", target=1.0),
    Objective(name="e2el-p99", metric="e2el", stat="p99", target=10.0),
    Objective(name="itl-mean", metric="itl", stat="mean", target=1.0),
    Objective(name="e2el-share", metric="e2el", stat="share_under", bound=1.0, target=0.5),
    Objective(name="errors", metric="error_rate", stat="value", target=0.1),
    Objective(name="rate", metric="request_rate", stat="value", target=1.0),
]


def records(table: pa.Table) -> list[RequestRecord]:
    """The table's rows as records, in the order they finished (as a look receives them)."""
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        row.update(request_id=i, worker="w", wall_sent=1.7e9 + row["t_sent"])
    done = sorted(rows, key=lambda r: r["t_done"])
    return [RequestRecord.from_row(r) for r in done]


@pytest.fixture(scope="module")
def serving() -> tuple[pa.Table, list[RequestRecord]]:
    table = run(np.random.default_rng(3), Shape(requests=3000))
    return table, records(table)


def test_a_look_reads_what_the_exact_judge_reads(
    serving: tuple[pa.Table, list[RequestRecord]],
) -> None:
    table, recs = serving
    end = max(r.t_done for r in recs)
    tallies = LookTallies({})
    for part in np.array_split(np.arange(len(recs)), 7):  # seven looks
        tallies.fold([recs[i] for i in part], 0.0)
    exact = analyse(table, 0.0, end)
    for obj in OBJECTIVES:
        a = estimate(obj, exact, 0.95)
        b = tallies.estimate(obj, end, 0.95)
        assert a.value is not None, obj.name
        assert b.value is not None, obj.name
        assert b.n == a.n, obj.name
        assert b.value == pytest.approx(a.value, rel=0.02, abs=1e-3), obj.name
        assert a.interval is not None
        assert b.interval is not None
        for x, y in zip(a.interval, b.interval, strict=True):
            # the design effects come from other batches (finish order, 16-32 of them)
            assert y == pytest.approx(x, rel=0.08, abs=5e-3), obj.name


def test_folding_in_parts_is_folding_at_once(
    serving: tuple[pa.Table, list[RequestRecord]],
) -> None:
    _, recs = serving
    once, parts = LookTallies({"e2el": 2.0}), LookTallies({"e2el": 2.0})
    once.fold(recs, 0.0)
    for start in range(0, len(recs), 97):
        parts.fold(recs[start : start + 97], 0.0)
    assert once.batch_size == parts.batch_size > 4  # the batches doubled
    for name, binned in once.metrics.items():
        assert np.array_equal(binned.counts, parts.metrics[name].counts), name
    assert np.array_equal(once.attempted, parts.attempted)
    assert (once.good, once.succeeded) == (parts.good, parts.succeeded)
    assert int(once.attempted.sum()) == len(recs)
    assert once.attempted.size == MAX_BATCHES


def test_bins_are_one_percent_wide_and_bounds_round_outwards() -> None:
    values = np.asarray([1e-7, 1e-6, 0.0123, 1.0, 99_999.0, 1e6])
    bins = bin_of(values)
    assert list(bins[:2]) == [0, 0]
    assert bins[-1] == BINS - 1
    edges = 1e-6 * 1.01 ** (bins[2:5] - 1.0), 1e-6 * 1.01 ** bins[2:5].astype(float)
    assert np.all(edges[0] < values[2:5] * (1 + 1e-12))
    assert np.all(values[2:5] <= edges[1] * (1 + 1e-12))
    tallies = LookTallies({})
    binned = tallies.metrics["e2el"]
    samples = np.random.default_rng(0).lognormal(0, 1, 5000)
    binned.add(samples, np.zeros(samples.size, dtype=np.int64))
    est = binned.percentile(0.9, 0.95)
    assert est.interval is not None
    ordered = np.sort(samples)
    lower, upper = order_ranks(samples.size, 0.9, 0.95)  # one batch: independent, exact ranks
    assert lower is not None
    assert upper is not None
    assert ordered[lower] / 1.01 <= est.interval[0] <= ordered[lower]
    assert ordered[upper] <= est.interval[1] <= ordered[upper] * 1.01
    assert math.isclose(est.value or 0.0, float(np.percentile(samples, 90)), rel_tol=0.01)


def test_a_look_stops_once_every_critical_objective_is_decided(
    serving: tuple[pa.Table, list[RequestRecord]],
) -> None:
    _, recs = serving
    policy = Policy.model_validate(
        {
            "name": "p",
            "objectives": [
                {"name": "p50", "metric": "e2el", "stat": "p50", "target": "5s"},
                {"name": "gpu", "metric": "gpu.utilization", "stat": "mean",
                 "target": {"min": 0.1, "max": 0.9}, "critical": False},
            ],
        }
    )  # fmt: skip
    load = LoadSpec.model_validate(
        {"duration_s": 600, "early_stop": {"every_s": 10, "min_s": 30},
         "arrival": {"type": "poisson", "rate": 10}}
    )  # fmt: skip
    judge = EarlyJudge(policy, load)
    for r in recs[:5]:
        judge.observe(r)
    assert judge(0.0) is None  # 5 requests cannot decide a median at 0.9983
    for r in recs[5:]:
        judge.observe(r)
    reason = judge(0.0)
    assert reason is not None
    assert reason.startswith("every critical objective decided at look 2 on 3000 requests")
    assert "p50 PASS" in reason
    assert not judge.pending
