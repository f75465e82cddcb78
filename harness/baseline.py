"""`harness evaluate CANARY --baseline BASELINE`: read both run folders and compare them.

The statistics are in ``harness.compare`` (pure); this reads each run as ``judge_run`` does
(its records over its own measured window), compares, and writes ``comparison.json`` and
``comparison.md`` into the canary's folder beside its verdict files.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from harness.analysis import RunMetrics, analyse
from harness.compare import CanaryDecision, Comparison, compare
from harness.errors import ExitCode
from harness.pipeline import measure_window
from harness.policy import Policy
from harness.recordlog import read_table
from harness.report.comparison import write_comparison
from harness.results import Manifest, read_manifest

#: What the comparison's decision alone would exit with (DESIGN.md, "Exit codes").
DECISION_EXIT = {
    CanaryDecision.PROMOTE: ExitCode.PASS,
    CanaryDecision.HOLD: ExitCode.INCONCLUSIVE,
    CanaryDecision.ROLLBACK: ExitCode.FAIL,
}
#: Least to most severe: an invalid run stays invalid whatever the comparison says, and a
#: failed objective stays a failure when the comparison only lacks data.
_SEVERITY = (ExitCode.PASS, ExitCode.INCONCLUSIVE, ExitCode.FAIL, ExitCode.INVALID)


def read_run(run_dir: Path, policy: Policy) -> tuple[RunMetrics, Manifest]:
    """A run's client metrics over its measured window (from the records if it was killed)."""
    manifest = read_manifest(run_dir)
    table = read_table(run_dir)
    return analyse(table, *measure_window(manifest, table), policy.goodput), manifest


def allowances(policy: Policy) -> dict[str, float]:
    """Per metric, the worsening its objectives tolerate: the strictest of their
    ``allowed_increase`` (metrics without one get the comparison's default)."""
    allowed: dict[str, float] = {}
    for obj in policy.objectives:
        if obj.allowed_increase is not None:
            allowed[obj.metric] = min(obj.allowed_increase, allowed.get(obj.metric, math.inf))
    return allowed


def compare_runs(
    canary_dir: Path, baseline_dir: Path, policy: Policy, write: bool = True
) -> Comparison:
    """Compare two stored runs under the policy; writes the comparison files into canary_dir."""
    canary, canary_manifest = read_run(canary_dir, policy)
    baseline, baseline_manifest = read_run(baseline_dir, policy)
    result = compare(
        policy,
        canary,
        baseline,
        allowed=allowances(policy),
        canary_workload=canary_manifest.scenario.get("workload"),
        baseline_workload=baseline_manifest.scenario.get("workload"),
    )
    notes = [
        f"the {role} run is {m.status}, not complete: compared on the records that reached disk"
        for role, m in (("canary", canary_manifest), ("baseline", baseline_manifest))
        if m.status != "complete"
    ]
    result = replace(
        result,
        notes=(*result.notes, *notes),
        labels={"canary": canary_manifest.run_id, "baseline": baseline_manifest.run_id},
    )
    if write:
        write_comparison(canary_dir, result)
    return result


def combined_exit(verdict_code: ExitCode, decision: CanaryDecision) -> ExitCode:
    """The verdict's exit code, or the comparison's where that is more severe.

    ROLLBACK exits 1 and HOLD 3, as the issue asks, except that they never mask a more severe
    verdict: an INVALID run (4) stays 4 and a FAIL (1) is not softened to 3 by a HOLD.
    """
    return max(verdict_code, DECISION_EXIT[decision], key=_SEVERITY.index)
