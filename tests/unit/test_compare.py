"""Canary against baseline (harness.canary.compare): the statistics, the classes, the decision."""

from __future__ import annotations

import json
import time
from types import MappingProxyType
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from harness.canary.compare import (
    CanaryDecision,
    Comparison,
    ShiftClass,
    allowances,
    compare,
    compare_samples,
    compared_metrics,
)
from harness.canary.twosample import _bootstrap_quantile, hodges_lehmann, newcombe_interval
from harness.errors import ExitCode
from harness.flows.evaluate import combined_exit
from harness.judge.analysis import RunMetrics
from harness.judge.confidence import FloatArray
from harness.report.comparison import comparison_renderable, render_comparison_markdown
from harness.spec.metrics import METRICS
from harness.spec.policy import Policy

POLICY = Policy.model_validate(
    {
        "name": "t",
        "objectives": [
            {"name": "ttft-p99", "metric": "ttft", "stat": "p99", "target": 1.0},
            {"name": "e2el-p50", "metric": "e2el", "stat": "p50", "target": 2.0},
            {"name": "errors", "metric": "error_rate", "stat": "value", "target": 0.01},
            {"name": "gpu", "metric": "gpu.utilization", "stat": "mean", "target": 0.9},
        ],
    }
)


def latency(n: int, seed: int, scale: float = 1.0) -> FloatArray:
    """Lognormal latencies around 100 ms (scaled: a +20 % regression is scale=1.2)."""
    return np.random.default_rng(seed).lognormal(np.log(0.1), 0.3, n) * scale


def run(
    ttft: FloatArray,
    e2el: FloatArray | None = None,
    *,
    attempted: int | None = None,
    failed: int = 0,
    prompt: float = 128.0,
    output: float = 64.0,
) -> RunMetrics:
    e2el = ttft * 5.0 if e2el is None else e2el
    attempted = ttft.size + failed if attempted is None else attempted
    return RunMetrics(
        samples=MappingProxyType({"ttft": ttft, "e2el": e2el}),
        scalars=MappingProxyType({"error_rate": failed / attempted if attempted else None}),
        attempted=attempted,
        failed=failed,
        succeeded=attempted - failed,
        good=attempted - failed,
        error_classes=MappingProxyType({"http_500": failed} if failed else {}),
        duration_s=10.0,
        prompt_tokens_mean=prompt,
        output_tokens_mean=output,
    )


def test_identical_distributions_pass_and_promote() -> None:
    result = compare(POLICY, run(latency(2000, 1)), run(latency(2000, 2)))
    assert [m.metric for m in result.metrics] == ["ttft", "e2el", "error_rate"]
    assert {m.classification for m in result.metrics} == {ShiftClass.PASS}
    assert result.decision is CanaryDecision.PROMOTE
    assert result.notes == ()
    assert result.warnings == ()
    ttft = result.metric("ttft")
    assert ttft.interval is not None
    assert ttft.interval[0] < 0 < ttft.interval[1]
    assert ttft.p_value is not None
    assert ttft.p_value > 0.01


def test_twenty_percent_regression_is_high_and_rolls_back() -> None:
    result = compare(POLICY, run(latency(2000, 1, 1.2)), run(latency(2000, 2)))
    ttft = result.metric("ttft")
    assert ttft.classification is ShiftClass.HIGH
    assert ttft.worse
    assert ttft.relative_shift == pytest.approx(0.2, abs=0.03)
    assert ttft.p_value is not None
    assert ttft.p_value < 1e-10
    assert ttft.interval is not None
    assert ttft.margin is not None
    assert ttft.baseline is not None
    assert ttft.margin == pytest.approx(0.1 * ttft.baseline)
    assert ttft.interval[0] > ttft.margin
    assert result.decision is CanaryDecision.ROLLBACK
    assert "ttft High" in result.reason


def test_the_comparison_is_at_the_policys_confidence() -> None:
    canary, base = run(latency(400, 1, 1.05)), run(latency(400, 2))
    widths = {}
    for confidence in (0.8, 0.95, 0.99):
        policy = POLICY.model_copy(update={"confidence": confidence})
        result = compare(policy, canary, base)
        assert result.confidence == confidence
        interval = result.metric("ttft").interval
        assert interval is not None
        widths[confidence] = interval[1] - interval[0]
    assert widths[0.8] < widths[0.95] < widths[0.99]
    # An explicit confidence still wins over the policy's.
    assert compare(POLICY.model_copy(update={"confidence": 0.8}), canary, base,
                   confidence=0.99).confidence == 0.99  # fmt: skip


def test_twenty_percent_improvement_is_low_and_promotes() -> None:
    result = compare(POLICY, run(latency(2000, 1, 0.8)), run(latency(2000, 2)))
    ttft = result.metric("ttft")
    assert ttft.classification is ShiftClass.LOW
    assert not ttft.worse
    assert result.decision is CanaryDecision.PROMOTE


def test_a_shift_inside_the_allowance_passes_even_when_significant() -> None:
    # +5 % with 2000 a side is significant (U test) but inside the 10 % allowed: Pass.
    result = compare(POLICY, run(latency(2000, 1, 1.05)), run(latency(2000, 2)))
    ttft = result.metric("ttft")
    assert ttft.p_value is not None
    assert ttft.p_value < 0.05
    assert ttft.classification is ShiftClass.PASS
    # A per-metric allowance of 1 % makes the same shift High.
    strict = compare(POLICY, run(latency(2000, 1, 1.05)), run(latency(2000, 2)),
                     allowed={"ttft": 0.01})  # fmt: skip
    assert strict.metric("ttft").classification is ShiftClass.HIGH
    assert strict.metric("ttft").allowed == 0.01
    assert strict.metric("e2el").allowed == 0.10


def test_too_few_samples_is_nodata_and_holds() -> None:
    result = compare(POLICY, run(latency(20, 1, 1.5)), run(latency(2000, 2)))
    ttft = result.metric("ttft")
    assert ttft.classification is ShiftClass.NODATA
    assert ttft.shift is not None  # still estimated and shown, just not decided on
    assert result.decision is CanaryDecision.HOLD
    assert "at least 50 per side" in result.reason
    assert "ttft 20 / 2000" in result.reason
    relaxed = compare(POLICY, run(latency(20, 1)), run(latency(2000, 2)), min_samples=10)
    assert relaxed.metric("ttft").classification is not ShiftClass.NODATA


def test_no_samples_at_all_is_nodata_without_numbers() -> None:
    empty = np.zeros(0)
    result = compare(POLICY, run(empty, empty, attempted=0), run(latency(500, 2)))
    for m in result.metrics:
        assert m.classification is ShiftClass.NODATA
        assert m.shift is None
        assert m.interval is None
    assert result.decision is CanaryDecision.HOLD
    json.dumps(result.to_json_dict(), allow_nan=False)


def test_rollback_wins_over_hold() -> None:
    canary = run(latency(2000, 1, 1.3), latency(20, 3))  # ttft High, e2el NoData
    result = compare(POLICY, canary, run(latency(2000, 2)))
    assert result.metric("e2el").classification is ShiftClass.NODATA
    assert result.decision is CanaryDecision.ROLLBACK


def test_advisory_regression_promotes_with_a_warning() -> None:
    policy = Policy.model_validate(
        {"name": "e2el only", "objectives": [{"name": "e", "metric": "e2el", "stat": "p50",
                                              "target": 2.0}]}
    )  # fmt: skip
    base = latency(2000, 2)
    result = compare(policy, run(latency(2000, 1, 1.3), base * 5), run(base))
    ttft = result.metric("ttft")
    assert not ttft.critical
    assert ttft.classification is ShiftClass.HIGH
    assert result.decision is CanaryDecision.PROMOTE
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith("ttft (advisory) is High")


def test_compared_metrics_from_the_policy() -> None:
    assert compared_metrics(POLICY) == {"ttft": True, "e2el": True, "error_rate": True}
    runbook = Policy.model_validate(
        {"name": "r", "objectives": [
            {"name": "a", "metric": "e2el", "stat": "p50", "target": 1.0, "critical": False},
            {"name": "b", "metric": "e2el", "stat": "p99", "target": 2.0},
            {"name": "c", "metric": "tpot", "stat": "p99", "target": 0.1, "critical": False},
            {"name": "d", "metric": "request_rate", "stat": "value", "target": 1.0},
        ]}
    )  # fmt: skip
    # critical when any objective naming it is; scalars other than error_rate are not compared
    assert compared_metrics(runbook) == {
        "e2el": True,
        "tpot": False,
        "ttft": False,
        "error_rate": False,
    }


def test_error_rates_compare_as_two_proportions() -> None:
    base = run(latency(1000, 2), failed=0)
    one_error = compare(POLICY, run(latency(999, 1), failed=1), base).metric("error_rate")
    assert one_error.test == "fisher-exact"
    assert one_error.canary == pytest.approx(0.001)
    assert one_error.classification is ShiftClass.PASS  # one error is not a regression
    assert one_error.p_value == pytest.approx(1.0)
    many = compare(POLICY, run(latency(900, 1), failed=100), base)
    errors = many.metric("error_rate")
    assert errors.classification is ShiftClass.HIGH
    assert errors.shift == pytest.approx(0.1)
    assert errors.interval is not None
    assert errors.interval[0] > 0
    assert errors.p_value is not None
    assert errors.p_value < 1e-20
    assert errors.p99_interval is None
    assert many.decision is CanaryDecision.ROLLBACK
    fewer = compare(POLICY, run(latency(1000, 1), failed=0), run(latency(900, 2), failed=100))
    assert fewer.metric("error_rate").classification is ShiftClass.LOW


def test_newcombe_interval_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (a), method 10.
    low, high = newcombe_interval(56, 70, 48, 80, 0.95)
    assert low == pytest.approx(0.0524, abs=5e-4)
    assert high == pytest.approx(0.3339, abs=5e-4)
    # and it keeps a width at zero events, where Wald's collapses to a point
    low, high = newcombe_interval(0, 10, 0, 20, 0.95)
    assert low < 0 < high


def test_hodges_lehmann_against_brute_force() -> None:
    rng = np.random.default_rng(5)
    c, b = rng.normal(1.0, 1.0, 37), rng.normal(0.0, 1.0, 41)
    shift, interval = hodges_lehmann(c, b, 0.95)
    diffs = np.sort(np.subtract.outer(c, b).ravel())
    assert shift == pytest.approx(float(np.median(diffs)))
    n, m = c.size, b.size
    k = int(np.floor(n * m / 2 - 1.959964 * np.sqrt(n * m * (n + m + 1) / 12)))
    assert interval is not None
    assert interval[0] == pytest.approx(diffs[k - 1])
    assert interval[1] == pytest.approx(diffs[n * m - k])
    assert hodges_lehmann(c[:2], b[:2], 0.95)[1] is None  # too small for any order statistic


def test_hodges_lehmann_interval_holds_the_true_shift() -> None:
    result = compare_samples(METRICS["ttft"], latency(3000, 1) + 0.015, latency(3000, 2))
    assert result.interval is not None
    assert result.interval[0] < 0.015 < result.interval[1]
    covered = 0
    reps = 400
    for seed in range(reps):
        rng = np.random.default_rng(seed)
        c, b = rng.exponential(1.0, 60) + 0.3, rng.exponential(1.0, 70)
        _, iv = hodges_lehmann(c, b, 0.95)
        assert iv is not None
        covered += iv[0] <= 0.3 <= iv[1]
    assert 0.92 <= covered / reps <= 0.98


def test_bootstrap_interval_is_ordered_and_brackets_the_p99_difference() -> None:
    result = compare_samples(METRICS["ttft"], latency(2000, 1, 1.2), latency(2000, 2))
    assert result.p99_interval is not None
    assert result.p99_diff is not None
    low, high = result.p99_interval
    assert low < high
    assert low <= result.p99_diff <= high
    assert result.p99_canary == pytest.approx(float(np.percentile(latency(2000, 1, 1.2), 99)))


def test_tail_bootstrap_has_the_plain_bootstraps_distribution() -> None:
    x = np.random.default_rng(1).lognormal(0.0, 0.5, 5000)
    tail = _bootstrap_quantile(x, 99.0, 3000, np.random.default_rng(2))
    idx = np.random.default_rng(3).integers(0, x.size, size=(3000, x.size))
    plain = np.percentile(x[idx], 99.0, axis=1)
    assert tail.mean() == pytest.approx(plain.mean(), rel=0.01)
    assert tail.std() == pytest.approx(plain.std(), rel=0.08)
    # a median is no tail: every value is drawn, the plain bootstrap itself
    med = _bootstrap_quantile(x[:100], 50.0, 10, np.random.default_rng(0))
    assert np.all((med >= x[:100].min()) & (med <= x[:100].max()))


def test_higher_is_better_metrics_mirror() -> None:
    clock = METRICS["gpu.sm_clock"]
    assert clock.better == "higher"
    slower = compare_samples(clock, latency(2000, 1, 0.8), latency(2000, 2))
    assert slower.classification is ShiftClass.LOW
    assert slower.worse  # lower is the bad direction here
    faster = compare_samples(clock, latency(2000, 1, 1.2), latency(2000, 2))
    assert faster.classification is ShiftClass.HIGH
    assert not faster.worse


def test_notes_when_the_runs_are_not_like_with_like() -> None:
    canary = run(latency(2000, 1), prompt=256.0, output=64.0)
    result = compare(POLICY, canary, run(latency(1000, 2), prompt=128.0, output=66.0),
                     canary_workload={"type": "synthetic", "prompt_tokens": 256},
                     baseline_workload={"type": "synthetic", "prompt_tokens": 128})  # fmt: skip
    assert result.notes == (
        "prompt lengths differ: canary 256 vs baseline 128 tokens (+100 %): "
        "the comparison is not like with like",
        "request counts differ: canary 2000 vs baseline 1000 (+100 %): "
        "the comparison is not like with like",
        "the scenarios' workloads differ (prompt_tokens): the comparison is not like with like",
    )
    same = compare(POLICY, run(latency(2000, 1)), run(latency(1900, 2), output=60.0),
                   canary_workload={"a": 1}, baseline_workload={"a": 1})  # fmt: skip
    assert same.notes == ()  # 5 % fewer requests and 6 % shorter outputs are within 10 %


def test_seeded_and_reproducible() -> None:
    def once(seed: int) -> dict[str, Any]:
        result = compare(POLICY, run(latency(3000, 1, 1.1)), run(latency(2500, 2)), seed=seed)
        return result.to_json_dict()

    first = once(7)
    assert first == once(7)
    assert first != once(8)  # the bootstrap and the HL subsample draw from the seed
    ttft = next(m for m in first["metrics"] if m["metric"] == "ttft")
    assert any("HL shift from a random 2000 of the 3000 canary samples" in n
               for n in ttft["notes"])  # fmt: skip


def test_large_runs_stay_quick() -> None:
    canary, baseline = run(latency(100_000, 1, 1.2)), run(latency(100_000, 2))
    start = time.perf_counter()
    result = compare(POLICY, canary, baseline)
    elapsed = time.perf_counter() - start
    assert result.metric("ttft").classification is ShiftClass.HIGH
    assert elapsed < 5.0, elapsed  # about 0.3 s here


def test_invalid_arguments() -> None:
    base = run(latency(100, 1))
    with pytest.raises(ValueError, match="confidence"):
        compare(POLICY, base, base, confidence=1.0)
    with pytest.raises(ValueError, match="negative"):
        compare(POLICY, base, base, allowed={"ttft": -0.1})


@pytest.mark.parametrize(
    ("verdict", "decision", "expected"),
    [
        (ExitCode.PASS, CanaryDecision.PROMOTE, ExitCode.PASS),
        (ExitCode.INCONCLUSIVE, CanaryDecision.PROMOTE, ExitCode.INCONCLUSIVE),
        (ExitCode.PASS, CanaryDecision.ROLLBACK, ExitCode.FAIL),
        (ExitCode.INCONCLUSIVE, CanaryDecision.ROLLBACK, ExitCode.FAIL),
        (ExitCode.PASS, CanaryDecision.HOLD, ExitCode.INCONCLUSIVE),
        (ExitCode.FAIL, CanaryDecision.HOLD, ExitCode.FAIL),
        (ExitCode.INVALID, CanaryDecision.ROLLBACK, ExitCode.INVALID),
    ],
)
def test_exit_code_is_the_more_severe(
    verdict: ExitCode, decision: CanaryDecision, expected: ExitCode
) -> None:
    assert combined_exit(verdict, decision) is expected


def _rolled_back() -> Comparison:
    canary = run(latency(2000, 1, 1.2), prompt=256.0)
    return compare(POLICY, canary, run(latency(2000, 2)))


def test_json_and_markdown() -> None:
    result = _rolled_back()
    data = json.loads(json.dumps(result.to_json_dict(), allow_nan=False))
    assert data["schema"] == 1
    assert data["decision"] == "ROLLBACK"
    ttft = data["metrics"][0]
    assert ttft["classification"] == "High"
    assert ttft["worse"] is True
    assert len(ttft["interval"]) == 2
    md = render_comparison_markdown(result)
    assert md.startswith("## ❌ Canary against baseline: ROLLBACK")
    assert "| ttft | 2000/2000 |" in md
    assert "**High**" in md
    assert "prompt lengths differ" in md


def test_terminal_table_fits_a_ci_log() -> None:
    console = Console(width=120, record=True, highlight=False)
    console.print(comparison_renderable(_rolled_back()))
    text = console.export_text()
    assert "…" not in text
    assert "shift [interval]" in text
    assert "canary decision: ROLLBACK" in text


def test_an_objective_sets_its_metric_allowance() -> None:
    """allowed_increase on objectives: the strictest per metric decides High or Pass."""

    def policy(allowance: float) -> Policy:
        return Policy.model_validate({"name": "p", "objectives": [
            {"name": "a", "metric": "ttft", "stat": "p50", "target": "1s",
             "allowed_increase": 0.5},
            {"name": "b", "metric": "ttft", "stat": "p99", "target": "2s",
             "allowed_increase": allowance},
        ]})  # fmt: skip

    strict, loose = policy(0.05), policy(0.4)
    assert allowances(strict) == {"ttft": 0.05}
    rng = np.random.default_rng(3)
    base = rng.lognormal(np.log(0.1), 0.2, 3000)
    slower = base * 1.2  # a 20 % regression
    canary_m, baseline_m = run(slower), run(base)
    verdicts = {}
    for name, p in (("strict", strict), ("loose", loose)):
        result = compare(p, canary_m, baseline_m, allowed=allowances(p))
        verdicts[name] = next(m for m in result.metrics if m.metric == "ttft").classification
    assert verdicts == {"strict": ShiftClass.HIGH, "loose": ShiftClass.PASS}
