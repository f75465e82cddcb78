"""`harness tune STUDY`: which vLLM engine settings serve the scenario best under the policy.

For each setting the study picks, the launcher starts a server with it (the built-in
simulator, `vllm serve` on this node, or a patched InferenceService), the scenario is run
against it (a fixed load, or a capacity search), and the server is stopped before the next
one. The study lives in ``OUT/tune-NAME/`` (a journal Optuna resumes from, one folder per
setting, study.json, summary.md, report.html): rerunning the same command after an
interrupt or a kill measures only the settings not yet measured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.errors import ExitCode, RunInterrupted
from harness.flows.capacity import CapacityRequest, capacity_and_report
from harness.flows.step_runs import StepRunner, read_verdict, sigterm_as_interrupt
from harness.report.files import write_atomic
from harness.report.html import write_report_quietly
from harness.spec.study import Range, Scalar, Study, load_study, relative_to_study
from harness.tune.launch import Launcher, make_launcher
from harness.tune.results import (
    LatencyAxis,
    latency_axis,
    setting_text,
    study_document,
    study_markdown,
    table_header,
    table_rows,
)
from harness.tune.study import (
    Measured,
    definition,
    locked,
    open_study,
    progress,
    run_study,
    trials_of,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneRequest:
    study_file: Path
    out: Path = Path("results")
    overrides: tuple[str, ...] = ()
    fresh: bool = False
    apply: bool = False  # kserve: patch the InferenceService (default: only print the patches)


class _Tuning:
    """One study's run: the launcher, the measurement, the documents after each setting."""

    def __init__(self, req: TuneRequest, console: Console, announce: Callable[[str], None]) -> None:
        self.req, self.console, self.announce = req, console, announce
        self.study: Study = load_study(req.study_file, list(req.overrides))
        where = str(req.study_file)
        self.scenario_file = relative_to_study(req.study_file, self.study.scenario)
        policy = relative_to_study(req.study_file, self.study.policy) if self.study.policy else None
        self.scenario, self.runner = StepRunner.for_scenario(self.scenario_file, policy, ())
        self.axis: LatencyAxis = latency_axis(self.runner.policy, self.study.latency_objective,
                                              where)  # fmt: skip
        self.launcher: Launcher = make_launcher(self.study.launcher, apply=req.apply,
                                                announce=announce)  # fmt: skip
        self.folder = req.out / f"tune-{self.study.name}"
        self.record: Any = None
        self.doc: dict[str, Any] = {}

    # -- measuring one setting --

    def measure(self, setting: dict[str, Scalar], trial_dir: Path) -> Measured:
        trial_dir.mkdir(parents=True, exist_ok=True)
        self.announce(f"setting {setting_text(setting)}: starting the {self.launcher.kind} "
                      "server")  # fmt: skip
        try:
            served = self.launcher.start(setting, trial_dir / "server.log")
            try:
                if self.study.measure == "capacity":
                    got = self._capacity(served.url, trial_dir)
                else:
                    run_dir = self.runner.run({"trial": served.url}, trial_dir)["trial"]
                    got = self._from_run(run_dir)
            except BaseException:
                self.runner.stop()
                raise
        finally:
            self.launcher.stop()
        got.attrs["notes"] = list(served.notes)
        return got

    def _from_run(self, run_dir: Path) -> Measured:
        verdict = read_verdict(run_dir)
        summary = verdict.get("summary") or {}
        objective: dict[str, Any] = next((o for o in verdict.get("objectives", [])
                          if o.get("name") == self.axis.objective), {})  # fmt: skip
        attrs: dict[str, Any] = {"run_dir": str(run_dir.relative_to(self.folder)),
                                 "requests": summary.get("requests"),
                                 "duration_s": summary.get("duration_s")}  # fmt: skip
        for key in ("request_rate", "output_token_rate", "goodput"):
            attrs[key] = _finite(summary.get(key))
        for metric in ("ttft", "itl", "e2el"):
            stats = summary.get(f"{metric}_s") or {}
            attrs[f"{metric}_p50_s"] = _finite(stats.get("p50"))
            attrs[f"{metric}_p99_s"] = _finite(stats.get("p99"))
        decision = str(verdict.get("decision"))
        reason = verdict.get("invalid_reason") or ""
        if decision == "INVALID":
            return Measured(None, None, decision, attrs, f"the run was invalid: {reason}")
        return Measured(_finite(summary.get(self.study.throughput)),
                        _finite(objective.get("estimate")), decision, attrs,
                        f"{self.axis.objective} has no estimate")  # fmt: skip

    def _capacity(self, url: str, trial_dir: Path) -> Measured:
        options = self.study.capacity
        req = CapacityRequest(scenario_file=self.scenario_file, target_url=url,
                              policy_file=self.runner.policy_file, out=trial_dir,
                              tolerance=options.tolerance, max_probes=options.max_probes,
                              ceiling=options.ceiling, report=False)  # fmt: skip
        capacity_and_report(req, self.console, self.announce)
        found = sorted(trial_dir.glob("capacity-*/capacity.json"))
        if not found:
            return Measured(None, None, None, {}, "the capacity search wrote no capacity.json")
        doc = json.loads(found[-1].read_text(encoding="utf-8"))
        outcome, cap = doc["outcome"], doc["capacity"]
        probes = doc.get("probes") or []
        held = [p for p in probes if p.get("passed")]
        at = max(held, key=lambda p: p["level"]) if held else None
        if outcome == "INVALID" or (at is None and not probes):
            return Measured(None, None, "INVALID", {}, doc.get("reason", ""))
        if at is None:  # nothing held: no throughput within the policy
            at = min(probes, key=lambda p: p["level"])
        got = self._from_run(Path(at["run_dir"]))
        verdict = {"FOUND": "PASS", "ABOVE": "PASS", "NONE": "FAIL"}.get(outcome, "INCONCLUSIVE")
        attrs = {**got.attrs, "capacity_level": cap.get("level"), "capacity_unit": doc["unit"],
                 "run_dir": str(found[-1].parent.relative_to(self.folder))}  # fmt: skip
        throughput = 0.0 if outcome == "NONE" else got.throughput
        return Measured(throughput, got.latency, verdict, attrs, doc.get("reason", ""))

    # -- the documents and the progress lines --

    def write(self, complete: bool) -> None:
        trials = trials_of(self.record)
        self.doc = study_document(self.study, self.scenario.name, self.runner.policy.name,
                                  self.axis, trials, self.study.fixed, self.launcher.describe,
                                  complete)  # fmt: skip
        write_atomic(self.folder / "study.json", json.dumps(self.doc, indent=2) + "\n")
        write_atomic(self.folder / "summary.md", study_markdown(self.doc))

    def after_each(self, trial: Any) -> None:
        self.write(complete=False)
        row = next((r for r in self.doc["trials"] if r["number"] == trial.number), None)
        done = len(self.doc["trials"])
        if row is None:
            return
        head = f"setting {done} of {self.study.size} (trial #{row['number']}): " \
               f"{setting_text(row['params'])}: "  # fmt: skip
        if row["status"] == "measured":
            lat = self.axis
            self.announce(
                head + f"{row['verdict']}, {row['throughput']:,.1f} "
                f"{self.doc['throughput']['unit']}, {lat.metric} {lat.stat} "
                f"{row['latency'] * 1000:,.0f} ms; front so far: "
                + " ".join(f"#{n}" for n in self.doc["pareto"])
            )
        else:
            self.announce(head + f"{row['status'].replace('_', ' ')}: {row.get('reason') or ''}")

    def print_result(self) -> None:
        table = Table(*table_header(self.doc), title=f"study {self.study.name}")
        for row in table_rows(self.doc):
            table.add_row(*row)
        self.console.print(table)
        best = self.doc.get("best")
        self.console.print(f"best: {self.doc['best_reason']}", soft_wrap=True)
        if best:
            self.console.print(f"  trial #{best['number']}: {setting_text(best['params'])}",
                               soft_wrap=True)  # fmt: skip
            self.console.print(f"  {best['vllm_serve']}", soft_wrap=True, markup=False)
            self.console.print("  InferenceService patch: " + json.dumps(best["isvc_patch"]),
                               soft_wrap=True, markup=False)  # fmt: skip
        self.console.print(f"results: {self.folder}", soft_wrap=True)


def tune_and_report(
    req: TuneRequest, console: Console, announce: Callable[[str], None]
) -> ExitCode:
    """The command: the study (resumed where it stopped), its documents, and an exit code:
    0 a setting passes, 1 none passes, 3 none could be decided, 4 none could be measured."""
    tuning = _Tuning(req, console, announce)
    if tuning.launcher.kind == "kserve" and not req.apply:
        return _dry_run(tuning)
    study = tuning.study
    with locked(tuning.folder):
        policy_text = tuning.runner.policy_file.read_text(encoding="utf-8")
        ident = definition(study, tuning.scenario_file.read_text(encoding="utf-8"), policy_text)
        tuning.record = open_study(study, tuning.folder, ident, req.fresh)
        state = progress(tuning.record)
        if state.final or state.retry:
            announce(f"resuming {tuning.folder}: {len(state.final)} of {study.size} settings "
                     f"done (not measured again), {len(state.retry)} cut short (measured "
                     "again)")  # fmt: skip
        try:
            with sigterm_as_interrupt():
                run_study(study, tuning.record, tuning.folder, tuning.measure, tuning.after_each)
        except (KeyboardInterrupt, RunInterrupted):
            tuning.runner.stop()
            tuning.launcher.stop()
            _restore(tuning.launcher)
            tuning.write(complete=False)
            raise RunInterrupted(
                f"interrupted: the settings measured so far are kept in {tuning.folder}; "
                "rerun the same command to measure the rest"
            ) from None
        _restore(tuning.launcher)
        tuning.write(complete=True)
    write_report_quietly(tuning.folder, announce)
    tuning.print_result()
    return _exit_code(tuning.doc)


def _restore(launcher: Launcher) -> None:
    """An InferenceService the study patched gets its own settings back."""
    restore = getattr(launcher, "restore", None)
    if callable(restore):
        restore()


def _exit_code(doc: dict[str, Any]) -> ExitCode:
    if doc.get("best"):
        return ExitCode.PASS
    verdicts = {t["verdict"] for t in doc["trials"] if t["status"] == "measured"}
    if "FAIL" in verdicts or "WARN" in verdicts:
        return ExitCode.FAIL
    if verdicts:
        return ExitCode.INCONCLUSIVE
    return ExitCode.INVALID


def _dry_run(tuning: _Tuning) -> ExitCode:
    """kserve without --apply: the patch each setting would send; nothing is written."""
    study = tuning.study
    for setting in _points(study):
        full = {**study.fixed, **setting}
        tuning.console.print(f"{setting_text(setting)}: "
                             + json.dumps(tuning.launcher.describe(full)["isvc_patch"]),
                             soft_wrap=True, markup=False)  # fmt: skip
    tuning.console.print("dry run: nothing was patched or measured; rerun with --apply to "
                         "patch the InferenceService and measure each setting",
                         soft_wrap=True)  # fmt: skip
    return ExitCode.PASS


def _points(study: Study) -> list[dict[str, Scalar]]:
    """The grid's combinations in the order Optuna's grid sampler walks them (names sorted),
    or, for a space, its corners' lower ends (an example: a space is sampled as it goes)."""
    if study.grid is not None:
        names = sorted(study.grid)
        points: list[dict[str, Scalar]] = [{}]
        for name in names:
            points = [{**p, name: v} for p in points for v in study.grid[name]]
        return points
    example: dict[str, Scalar] = {}
    for name, space in (study.space or {}).items():
        example[name] = space.low if isinstance(space, Range) else space[0]
    return [example]


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
