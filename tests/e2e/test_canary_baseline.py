"""`harness evaluate CANARY --baseline BASELINE` on simulator runs: ROLLBACK, PROMOTE, HOLD.

Every run is the smoke scenario on the built-in simulator at 20 req/s for 8 s (150 requests;
the Poisson schedule is seeded, so each run sends the same requests). The simulator's
``extra_ttft_s`` delays each request before the engine: a regression of TTFT alone, sized
at 20 % of the baseline's measured median. The policy judges medians only, which 150
requests decide, so the verdict passes and the exit code is the comparison's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.cli import only_run_dir, read_json, run_cli

from harness.errors import ExitCode

pytestmark = pytest.mark.e2e

SMOKE = "tests/data/scenarios/base.yaml"
POLICY = """\
schema: 1
name: canary-e2e
description: medians, decidable on a short run; every objective critical
objectives:
  - {name: ttft-p50, metric: ttft, stat: p50, target: 1s, alert: 2s}
  - {name: e2el-p50, metric: e2el, stat: p50, target: 2s, alert: 5s}
  - {name: error-rate, metric: error_rate, stat: value, target: 5%, alert: 20%}
"""
BASELINE_SIM = {"prefill_per_token_s": 0.0001, "step_base_s": 0.01}
LOAD = ("load.duration_s=8", "load.warmup_s=1",
        "load.arrival={type: poisson, rate: 20, max_concurrency: 64}")  # fmt: skip


def harness_run(
    out: Path, policy: Path, sim: dict[str, float], load: tuple[str, ...], expect: ExitCode
) -> Path:
    """One `harness run` on the built-in simulator with these settings; its run folder."""
    sets = [f"target.sim.{key}={value}" for key, value in sim.items()]
    args = [arg for key in (*load, *sets) for arg in ("--set", key)]
    proc = run_cli("run", SMOKE, "--out", str(out), "--policy", str(policy), *args)
    assert proc.returncode == expect, proc.stdout + proc.stderr
    return only_run_dir(out)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The policy file and the baseline run, shared by the three comparisons."""
    root = tmp_path_factory.mktemp("canary")
    policy = root / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return policy, harness_run(root / "baseline", policy, BASELINE_SIM, LOAD, ExitCode.PASS)


def evaluate(canary: Path, baseline: Path) -> tuple[int, str, dict[str, Any]]:
    proc = run_cli("evaluate", str(canary), "--baseline", str(baseline))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert (canary / "comparison.md").is_file()
    return proc.returncode, proc.stdout, read_json(canary / "comparison.json")


def by_metric(comparison: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["metric"]: m for m in comparison["metrics"]}


def test_twenty_percent_slower_ttft_rolls_back(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    policy, base_dir = baseline
    base_ttft = read_json(base_dir / "verdict.json")["summary"]["ttft_s"]["p50"]
    slow = {**BASELINE_SIM, "extra_ttft_s": round(0.2 * base_ttft, 4)}
    canary = harness_run(tmp_path, policy, slow, LOAD, ExitCode.PASS)  # medians still pass
    code, out, comparison = evaluate(canary, base_dir)
    assert code == 1, out
    assert comparison["decision"] == "ROLLBACK"
    assert comparison["canary_run"] == canary.name
    assert comparison["baseline_run"] == base_dir.name
    ttft = by_metric(comparison)["ttft"]
    assert ttft["classification"] == "High"
    assert ttft["critical"]
    assert 1.12 < ttft["canary"] / ttft["baseline"] < 1.35  # measured medians (10 ms steps)
    assert ttft["interval"][0] > ttft["margin"]
    assert by_metric(comparison)["e2el"]["classification"] == "Pass"  # +6 ms of ~300 ms
    assert comparison["notes"] == []  # same workload, same schedule
    assert "canary decision: ROLLBACK" in out


def test_same_settings_promote(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    policy, base_dir = baseline
    canary = harness_run(tmp_path, policy, BASELINE_SIM, LOAD, ExitCode.PASS)
    code, out, comparison = evaluate(canary, base_dir)
    assert comparison["decision"] == "PROMOTE", out
    assert code == 0, out  # the verdict's code: PASS
    assert {m["classification"] for m in comparison["metrics"]} == {"Pass"}
    assert "canary decision: PROMOTE" in out


def test_too_few_requests_hold(baseline: tuple[Path, Path], tmp_path: Path) -> None:
    policy, base_dir = baseline
    tiny = ("load.duration_s=1", "load.warmup_s=0",
            "load.arrival={type: poisson, rate: 5, max_concurrency: 8}")  # fmt: skip
    canary = harness_run(tmp_path, policy, BASELINE_SIM, tiny, ExitCode.INCONCLUSIVE)
    code, out, comparison = evaluate(canary, base_dir)
    assert code == 3, out
    assert comparison["decision"] == "HOLD"
    assert "at least 50 per side" in comparison["reason"]
    assert by_metric(comparison)["ttft"]["classification"] == "NoData"
    assert any(note.startswith("request counts differ") for note in comparison["notes"])
