"""`harness evaluate RUN_DIR [--baseline BASELINE]`: judge a stored run folder, alone or as a
canary against its baseline.

``judge_run`` is also the last step of `harness run`, so a run and its re-judging reach the
same verdict. It reads the records over the run's measured window, the collectors' data, the
load generators' reports, and writes verdict.json, summary.md and junit.xml. With a baseline,
the canary comparison (``canary.compare``) writes comparison.json and comparison.md into the
canary's folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from harness.canary.compare import CanaryDecision, Comparison, allowances, compare
from harness.collectors.stored import read_collection
from harness.errors import ExitCode, note_run_dir
from harness.judge.analysis import RunMetrics, analyse
from harness.judge.classify import evaluate, exit_code
from harness.judge.crosscheck import crosscheck
from harness.judge.saturation import saturation_reason
from harness.judge.served import ServedRule, expected_backends
from harness.judge.server import collected_summary, share_bounds, with_collected
from harness.judge.steady import holds_of, steady_state, window_metrics
from harness.judge.verdict import Verdict
from harness.records.log import read_table, without_aborted
from harness.records.run_dir import MANIFEST_NAME, Manifest, measured_window, read_manifest
from harness.report.comparison import COMPARISON_MD, print_comparison, write_comparison
from harness.report.files import SUMMARY_FILE, write_reports
from harness.report.html import HTML_REPORT, write_report_quietly
from harness.report.table import print_verdict
from harness.spec.config import validate
from harness.spec.load import LoadSpec
from harness.spec.policy import Policy, load_policy

#: What the comparison's decision alone would exit with.
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
    table, _ = without_aborted(read_table(run_dir))
    served = ServedRule.of(policy, expected_backends(manifest.scenario))
    return analyse(table, *measured_window(manifest, table), policy.goodput, served), manifest


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
        write_comparison(canary_dir, result, baseline_dir)
    return result


def combined_exit(verdict_code: ExitCode, decision: CanaryDecision) -> ExitCode:
    """The verdict's exit code, or the comparison's where that is more severe.

    ROLLBACK exits 1 and HOLD 3, except that they never mask a more severe
    verdict: an INVALID run (4) stays 4 and a FAIL (1) is not softened to 3 by a HOLD.
    """
    return max(verdict_code, DECISION_EXIT[decision], key=_SEVERITY.index)


def judge_run(run_dir: Path, policy: Policy, write: bool = True) -> Verdict:
    """Judge a stored run (also the last step of `run`); writes the reports."""
    manifest = read_manifest(run_dir)
    everything = read_table(run_dir)
    table, aborted = without_aborted(everything)
    early = manifest.load.get("early_stop")
    if isinstance(early, dict) and "confidence_per_look" in early:
        # Judged at the confidence each look had, or the looks would have spent it twice.
        policy = policy.model_copy(update={"confidence": float(early["confidence_per_look"])})
    start, end = measured_window(manifest, table)
    served = ServedRule.of(policy, expected_backends(manifest.scenario))
    metrics = analyse(table, start, end, policy.goodput, served)
    collected = read_collection(run_dir, manifest)
    # The server saw the aborted requests too: the client's side of the count keeps them.
    checks = crosscheck(everything, collected) if collected is not None else []
    checks.append(steady_state(table, start, end, policy.confidence, stage_holds(manifest)))
    windows = {
        length: window_metrics(table, start, end, length, policy.goodput, served)
        for length in {o.window for o in policy.objectives if o.window is not None}
    }
    verdict = evaluate(
        policy,
        with_collected(metrics, collected),
        invalid_reason=saturation_reason(manifest),
        checks=checks,
        collected=collected_summary(collected, share_bounds(policy.objectives)),
        windows=windows,
        interrupted=interruption(manifest, aborted),
    )
    if write:
        write_reports(run_dir, verdict)
    return verdict


def stage_holds(manifest: Manifest) -> list[tuple[float, float]]:
    """Where the run's staged load held a level (monotonic seconds); [] without stages, or
    for a run killed before it wrote its timeline."""
    load = manifest.scenario.get("load")
    if manifest.timeline is None or not isinstance(load, dict) or not load.get("stages"):
        return []
    try:
        spec = LoadSpec.model_validate(load)
    except ValidationError:
        return []
    return holds_of(spec, manifest.timeline.t_start)


def interruption(manifest: Manifest, aborted: int) -> str | None:
    """How a signal cut the run short, for verdict.json and the reports; None if it did not."""
    info = manifest.load.get("interrupted")
    if not isinstance(info, dict) and not aborted:
        return None
    if not isinstance(info, dict):
        return f"{aborted} request(s) were aborted in flight by an interrupt and left out"
    measured, planned = info.get("measured_s"), info.get("planned_measured_s")
    span = ""
    if isinstance(measured, int | float) and isinstance(planned, int | float):
        span = f", {measured:.1f} s into the {planned:g} s measured window"
    return (
        f"interrupted by {info.get('signal')} at {info.get('at')}{span}; {aborted} request(s) "
        "in flight were aborted and left out of the verdict"
    )


def stored_policy(run_dir: Path) -> Policy:
    """The policy a run was judged by when it ran, from its manifest."""
    manifest = read_manifest(run_dir)
    return validate(Policy, manifest.policy, str(run_dir / MANIFEST_NAME) + " (policy)")


def evaluate_and_report(
    run_dir: Path,
    policy_file: Path | None,
    baseline_dir: Path | None,
    console: Console,
    warn: Callable[[str], None] | None = None,
) -> ExitCode:
    """The command: judge, print, compare with the baseline if given; the exit code.

    With a baseline the HTML report (the comparison, then the canary's run) is written into
    the canary's folder; without one, a report already there is rewritten, so it never shows
    a verdict the re-judging replaced (a folder without one stays as it was)."""
    note_run_dir(run_dir)
    policy = load_policy(policy_file) if policy_file is not None else stored_policy(run_dir)
    verdict = judge_run(run_dir, policy)
    print_verdict(verdict, console)
    code = exit_code(verdict.decision)
    if baseline_dir is not None:
        comparison = compare_runs(run_dir, baseline_dir, policy)
        print_comparison(comparison, console)
        code = combined_exit(code, comparison.decision)
    if baseline_dir is not None or (run_dir / HTML_REPORT).is_file():
        markdown = [run_dir / SUMMARY_FILE]
        if baseline_dir is not None:
            markdown.append(run_dir / COMPARISON_MD)
        html = write_report_quietly(run_dir, warn or console.print, markdown)
        if html is not None:
            console.print(f"report: {html}", soft_wrap=True)
    return code
