"""The runbook drills (scenarios/drills/) on the built-in simulator, shortened with --set:
each gives the outcome its comments promise, with the exact exit code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.cli import only_run_dir, read_json, run_cli

from harness.errors import ExitCode

pytestmark = pytest.mark.e2e

DRILLS = Path("scenarios/drills")


def drill(name: str, out: Path, *sets: str) -> tuple[Any, dict[str, Any], Path]:
    args = [a for s in sets for a in ("--set", s)]
    proc = run_cli("run", str(DRILLS / f"{name}.yaml"), "--out", str(out), *args, timeout=240)
    run_dir = only_run_dir(out)
    verdict: dict[str, Any] = read_json(run_dir / "verdict.json")
    return proc, verdict, run_dir


def objective(verdict: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(o for o in verdict["objectives"] if o["name"] == name)
    return found


def test_every_drill_is_a_valid_scenario() -> None:
    assert sorted(p.stem for p in DRILLS.glob("*.yaml")) == [
        "error-burst", "kv-exhaustion", "long-prompts", "rollback"]  # fmt: skip


def test_long_prompts_break_the_p99(tmp_path: Path) -> None:
    proc, verdict, _ = drill("long-prompts", tmp_path, "load.warmup_s=5", "load.duration_s=35")
    assert proc.returncode == ExitCode.FAIL, proc.stdout + proc.stderr
    assert objective(verdict, "p99-latency")["verdict"] == "FAIL"


def test_an_error_burst_fails_the_error_rate_and_clusters_in_time(tmp_path: Path) -> None:
    proc, verdict, _ = drill("error-burst", tmp_path, "load.warmup_s=2", "load.duration_s=20",
                             "target.sim.error_burst_every_s=6")  # fmt: skip
    assert proc.returncode == ExitCode.FAIL, proc.stdout + proc.stderr
    assert objective(verdict, "error-rate")["verdict"] == "FAIL"
    assert 0.02 < verdict["summary"]["errors"] / verdict["summary"]["requests"] < 0.3


def test_kv_exhaustion_preempts_and_fails_the_latency(tmp_path: Path) -> None:
    proc, verdict, run_dir = drill("kv-exhaustion", tmp_path, "load.warmup_s=3",
                                   "load.duration_s=20", "load.arrival={type: concurrency, "
                                   "users: 24}", "workload.max_tokens=160",
                                   "target.sim.num_gpu_blocks_override=260")  # fmt: skip
    assert proc.returncode == ExitCode.FAIL, proc.stdout + proc.stderr
    assert verdict["summary"]["errors"] == 0  # every request succeeds: slow, not broken
    (source,) = read_json(run_dir / "server.json")["sources"]
    preempted = source["windows"]["measure"]["counters"]["server.preemptions"]
    assert sum(preempted.values()) > 0


def test_the_rollback_drill_fails_the_policy(tmp_path: Path) -> None:
    proc, verdict, _ = drill("rollback", tmp_path, "load.warmup_s=2", "load.duration_s=15")
    assert proc.returncode == ExitCode.FAIL, proc.stdout + proc.stderr
    assert objective(verdict, "error-rate")["verdict"] == "FAIL"
