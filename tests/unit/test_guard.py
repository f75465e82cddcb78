"""The saturation guard: assess() on crafted reports, LoadGuard on a real gevent loop."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from harness.judge.saturation import Thresholds, assess
from harness.records.generator import GuardReport

PROBE = Path(__file__).resolve().parents[1] / "support" / "guard_probe.py"


def report(
    lag_p99_s: float | None = 0.002, cpu_p95: float | None = 0.3, samples: int = 200
) -> GuardReport:
    return GuardReport(
        interval_s=0.05,
        duration_s=10.0,
        samples=samples,
        lag_p50_s=None if lag_p99_s is None else lag_p99_s / 4,
        lag_p99_s=lag_p99_s,
        lag_max_s=None if lag_p99_s is None else lag_p99_s * 2,
        cpu_samples=20,
        cpu_mean=None if cpu_p95 is None else cpu_p95 * 0.8,
        cpu_p95=cpu_p95,
    )


def test_a_generator_that_kept_up_has_no_reasons() -> None:
    assert assess(report(), dispatch_lag_p99_s=0.004) == []


def test_no_samples_give_no_reasons() -> None:
    assert assess(report(lag_p99_s=None, cpu_p95=None, samples=0), None) == []


def test_event_loop_lag_alone() -> None:
    reasons = assess(report(lag_p99_s=0.034), dispatch_lag_p99_s=0.004)
    assert reasons == [
        "load generator saturated: event-loop lag p99 34 ms > 10 ms "
        "(timestamps would be late by that much)"
    ]


def test_cpu_alone() -> None:
    assert assess(report(cpu_p95=0.97)) == ["load generator CPU p95 97 % of one core >= 90 %"]


def test_dispatch_lag_alone() -> None:
    assert assess(report(), dispatch_lag_p99_s=0.25) == [
        "dispatch lag p99 250 ms > 50 ms: arrivals were sent late"
    ]


def test_every_reason_at_once_in_a_fixed_order() -> None:
    reasons = assess(report(lag_p99_s=0.0273, cpu_p95=1.0), dispatch_lag_p99_s=0.08)
    assert [r.split(" ")[:3] for r in reasons] == [
        ["load", "generator", "saturated:"],
        ["load", "generator", "CPU"],
        ["dispatch", "lag", "p99"],
    ]
    assert "27 ms" in reasons[0]
    assert "100 %" in reasons[1]


@pytest.mark.parametrize(
    ("lag", "cpu", "dispatch", "expected"),
    [
        (0.010, 0.3, 0.05, 0),  # lag and dispatch at their limits pass (strictly greater fails)
        (0.0101, 0.3, None, 1),
        (0.002, 0.8999, None, 0),
        (0.002, 0.90, None, 1),  # CPU at its limit fails (no slack left)
        (0.002, 0.3, 0.0501, 1),
    ],
)
def test_threshold_edges(lag: float, cpu: float, dispatch: float | None, expected: int) -> None:
    assert len(assess(report(lag_p99_s=lag, cpu_p95=cpu), dispatch)) == expected


def test_custom_thresholds() -> None:
    strict = Thresholds(lag_p99_s=0.001, cpu_p95=0.5, dispatch_lag_p99_s=0.001)
    assert len(assess(report(), 0.004, strict)) == 2  # lag 2 ms and dispatch 4 ms now too late
    assert assess(report(lag_p99_s=0.5, cpu_p95=1.0), 1.0, Thresholds(1.0, 1.1, 2.0)) == []


def counted(samples: int, over: int, p99_s: float = 0.0103) -> GuardReport:
    """A guard report that counted its samples over the limit (as LoadGuard writes them)."""
    return replace(report(lag_p99_s=p99_s, samples=samples), lag_limit_s=0.010, lag_over=over)


def test_two_stalls_in_a_short_run_are_not_saturation() -> None:
    """The CI run this rule came from: 2 of 107 wake-ups over 10 ms (19 ms the longest, the
    process at 2 % CPU: another process's stalls). The point p99 (10.3 ms) is over the limit;
    its lower bound is not. A report without the count keeps its old verdict."""
    assert assess(counted(107, 2)) == []
    assert assess(replace(counted(107, 2), lag_over=None, lag_limit_s=None)) != []


@pytest.mark.parametrize(
    ("samples", "fewest_over"),
    [(40, 3), (107, 4), (600, 11), (1200, 19), (12000, 139)],  # 7.5 % ... 1.16 % of them
)
def test_saturation_needs_more_samples_over_the_limit_than_chance_gives(
    samples: int, fewest_over: int
) -> None:
    assert assess(counted(samples, fewest_over - 1)) == []
    assert assess(counted(samples, fewest_over, p99_s=0.02)) == [
        f"load generator saturated: event-loop lag p99 20 ms > 10 ms: {fewest_over} of "
        f"{samples} wake-ups over 10 ms, more than 1 % at 95 % confidence "
        "(timestamps would be late by that much)"
    ]


def test_a_count_at_another_limit_falls_back_to_the_point_p99() -> None:
    strict = Thresholds(lag_p99_s=0.005)
    assert assess(counted(200, 0, p99_s=0.006), thresholds=strict) != []
    assert assess(counted(200, 0, p99_s=0.004), thresholds=strict) == []


def test_report_round_trips_through_json() -> None:
    for r in (report(), report(lag_p99_s=None, cpu_p95=None, samples=0), counted(107, 2)):
        assert GuardReport.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def probe(seconds: float, busy_ms: float) -> tuple[GuardReport, float]:
    """The guard's report from a child process, and psutil's CPU figure over the same span."""
    proc = subprocess.run(
        # -P: not the probe's folder first on sys.path, where support/secrets.py would stand in
        # for the standard library's `secrets` (numpy.random imports it).
        [sys.executable, "-P", str(PROBE), str(seconds), str(busy_ms)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return GuardReport.from_dict(out["report"]), float(out["psutil_cpu"])


def known(value: float | None) -> float:
    assert value is not None
    return value


def test_an_idle_loop_reports_small_lag_and_cpu() -> None:
    r, _ = probe(2.0, 0)
    assert r.samples >= 25  # ~40 expected at one sample per 50 ms
    assert known(r.lag_p50_s) < 0.008  # ~1 ms seen; ~5 ms at p99 with every core taken
    assert r.lag_limit_s == 0.010
    assert r.lag_over is not None  # counted, and too few to be saturation (assess, below)
    assert known(r.cpu_mean) < 0.2
    assert assess(r) == []


def test_a_loop_busy_60ms_at_a_time_reports_the_lag_and_a_full_core() -> None:
    r, psutil_cpu = probe(2.0, 60)
    assert r.samples >= 25
    assert known(r.lag_p99_s) >= 0.040
    assert known(r.lag_max_s) < 0.2  # bounded by one busy spell: no stall counted twice
    assert r.lag_over is not None
    assert r.lag_over > r.samples // 2  # most wake-ups wait 10 ms or more
    # Near one core (0.97 seen) when the machine has one to give, but only 0.3-0.6 with
    # every core taken by others: checked against psutil's figure rather than a fixed 1.0.
    assert known(r.cpu_mean) == pytest.approx(psutil_cpu, abs=0.1)
    assert known(r.cpu_mean) > 0.25
    assert assess(r)[0].startswith("load generator saturated: event-loop lag p99")


def test_the_load_runs_with_the_start_up_s_objects_frozen_and_thawed_after() -> None:
    """A full collection during the load walks only what the load made (see frozen_heap)."""
    script = (
        "import gc, json\n"
        "from harness.load.guard import frozen_heap\n"
        "made = [[i] for i in range(100_000)]\n"
        "with frozen_heap():\n"
        "    during = gc.get_freeze_count()\n"
        "    cycle = []; cycle.append(cycle); del cycle\n"
        "    freed = gc.collect()\n"
        "print(json.dumps({'during': during, 'after': gc.get_freeze_count(), 'freed': freed}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["during"] >= 100_000  # the start-up's objects, the test's own included
    assert out["freed"] >= 1  # what the load makes is still collected
    assert out["after"] == 0  # the analysis after the load collects everything again
