"""One gate step's load: the scenario run against the canary and the baseline at the same
time (two `harness run` processes, so both see the same cluster), judged and compared.

Shared by the KServe walk (flows/gate) and the LiteLLM blue-green switch (flows/bluegreen).
The runs are child processes so that each keeps its own load loop, its own folder and its
own verdict; an interrupt stops them in order (SIGINT, as a terminal's Ctrl-C would) before
the gate decides what to do with the cluster.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from harness.canary.compare import CanaryDecision, Comparison
from harness.errors import ExitCode, RunInterrupted, UsageError
from harness.flows.evaluate import compare_runs
from harness.gate.cluster import ClusterError
from harness.gate.steps import Journal, StepOutcome, decide_step
from harness.judge.verdict import Decision
from harness.spec.policy import Policy, load_policy
from harness.spec.scenario import Scenario, load_scenario, policy_path

#: How long a run may take to stop after SIGINT before it is killed.
STOP_GRACE_S = 30.0
#: Steps measuring less than this get no default early stop.
EARLY_STOP_FROM_S = 60.0
_MORE_REQUESTS = re.compile(r"about ([\d,]+) requests would decide")
_MORE_SECONDS = re.compile(r"about ([\d,]+) s of measurement would decide")


@dataclass(frozen=True, slots=True, kw_only=True)
class GateOptions:
    """What both gates (KServe steps, LiteLLM switch) are given."""

    scenario_file: Path
    namespace: str
    apply: bool = False
    kubeconfig: str | None = None
    ready_timeout_s: float = 600.0
    poll_s: float = 5.0
    policy_file: Path | None = None
    out: Path = Path("results")
    overrides: tuple[str, ...] = ()
    rollback_on_interrupt: bool = True


@dataclass(frozen=True, slots=True)
class StepJudged:
    """A step's outcome, with the run folders and, where the runs could be compared, the
    comparison (for the hold hint)."""

    outcome: StepOutcome
    dirs: dict[str, Path]
    comparison: Comparison | None
    hint: str | None


class StepRunner:
    """Starts, waits for and stops the step's runs; ``stop()`` is safe at any time."""

    def __init__(
        self, scenario_file: Path, policy_file: Path, policy: Policy, overrides: Sequence[str]
    ) -> None:
        self.scenario_file, self.policy_file, self.policy = scenario_file, policy_file, policy
        self.overrides = tuple(overrides)
        self.running: list[subprocess.Popen[bytes]] = []

    @classmethod
    def for_scenario(
        cls, scenario_file: Path, policy_file: Path | None, overrides: Sequence[str]
    ) -> tuple[Scenario, StepRunner]:
        """The scenario (with the user's overrides) and a runner for it. A bad scenario or
        policy stops here (exit 2), before anything is run or changed; runs get a default
        ``load.early_stop`` under the user's own overrides (the user's word wins)."""
        scenario = load_scenario(scenario_file, list(overrides))
        resolved = policy_file or policy_path(scenario_file, scenario)
        policy = load_policy(resolved)
        runner = cls(scenario_file, resolved, policy,
                     [*early_stop_overrides(scenario), *overrides])  # fmt: skip
        return scenario, runner

    def judge(self, percent: int, urls: dict[str, str], step_dir: Path) -> StepJudged:
        """Run the scenario against each role's URL at once; judge the canary and compare it
        with the baseline (when there is one)."""
        return self.assess(percent, self.run(urls, step_dir))

    def run(
        self, urls: Mapping[str, str | None], step_dir: Path, extra: Sequence[str] = ()
    ) -> dict[str, Path]:
        """One run per role ("canary", "baseline"), all at once; their run folders. When the
        canary stops early (decided), the baseline is stopped too (as Ctrl-C would: it is
        judged on what it measured), so both cover the same span and the step ends then."""
        folders = {role: step_dir / role for role in urls}
        procs = {role: self._start(urls[role], folder, extra) for role, folder in folders.items()}
        codes: dict[str, int] = {}
        if "canary" in procs:
            codes["canary"] = procs["canary"].wait()
            baseline = procs.get("baseline")
            if (
                baseline is not None
                and baseline.poll() is None
                and _stopped_early(folders["canary"])
            ):
                baseline.send_signal(signal.SIGINT)
        codes |= {role: proc.wait() for role, proc in procs.items() if role not in codes}
        self.running.clear()
        if ExitCode.USAGE in codes.values():
            raise UsageError(f"the step's runs stopped on bad input: see {step_dir}")
        return {role: _only_run(folder) for role, folder in folders.items()}

    def assess(self, percent: int, dirs: dict[str, Path]) -> StepJudged:
        """The step's decision from the canary's verdict, the baseline's, and their
        comparison (no baseline: the policy alone decides)."""
        verdicts = {role: read_verdict(folder) for role, folder in dirs.items()}
        decisions = {role: _decision(doc) for role, doc in verdicts.items()}
        comparison: Comparison | None = None
        if "baseline" in dirs and Decision.INVALID not in decisions.values():
            comparison = compare_runs(dirs["canary"], dirs["baseline"], self.policy)
        outcome = decide_step(
            percent,
            decisions["canary"],
            decisions.get("baseline", Decision.PASS),
            comparison.decision if comparison is not None else None,
            comparison.reason if comparison is not None else "",
            _deciding(verdicts["canary"]),
        )
        hint = hold_hint(verdicts["canary"], comparison)
        return StepJudged(outcome, dirs, comparison, hint)

    def _start(
        self, url: str | None, folder: Path, extra: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """`harness run` into ``folder``; no URL: the scenario's own target (or simulator).
        Without an HTML report: the search's or the gate's own documents cover its runs."""
        folder.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "harness", "run", str(self.scenario_file),
                "--policy", str(self.policy_file), "--out", str(folder),
                "--no-report"]  # fmt: skip
        if url is not None:
            args += ["--target", url]
        for item in (*self.overrides, *extra):
            args += ["--set", item]
        with (folder / "run.log").open("wb") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.running.append(proc)
        return proc

    def stop(self) -> None:
        """Stop the runs in flight as Ctrl-C would (they keep what they recorded)."""
        for proc in self.running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.running:
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running.clear()


class GateWalk(Protocol):
    """A gate's walk (KServe steps, or the LiteLLM switch), as the driver runs it."""

    decision: str
    reason: str

    def run(self) -> ExitCode: ...

    def finish(self, decision: str, reason: str, code: ExitCode = ...) -> ExitCode: ...

    def interrupted(self) -> str: ...


def drive(walk: GateWalk, journal: Journal, gate_dir: Path, console: Console) -> ExitCode:
    """Run a walk to its decision: a cluster failure is journalled and written to gate.json
    before it ends the command (exit 4); Ctrl-C or SIGTERM (a cancelled CI job, a deleted
    Job pod) lets the walk roll back, then ends it with exit 130."""
    try:
        with sigterm_as_interrupt():
            code = walk.run()
    except ClusterError as exc:
        journal.write("error", message=str(exc))
        walk.finish("ERROR", str(exc))
        raise
    except KeyboardInterrupt:
        raise RunInterrupted(walk.interrupted()) from None
    finally:
        journal.close()
    console.print(f"gate: {walk.decision}: {walk.reason}", soft_wrap=True)
    console.print(f"results: {gate_dir}", soft_wrap=True)
    return code


def undo_on_interrupt(
    walk: GateWalk,
    undo: Callable[[], None],
    moved: bool,
    allowed: bool,
    undone: str,
    where: str,
) -> str:
    """What an interrupted walk says, after undoing what moved (unless not ``allowed``);
    ``undone`` names what was undone, ``where`` the folder of the results."""
    if moved and allowed:
        try:
            undo()
        except ClusterError as exc:
            said = f"interrupted, and undoing the change failed: {exc}"
            walk.finish("INTERRUPTED", said)
            return said
        said = f"interrupted: {undone}"
    elif moved:
        said = "interrupted: the change was left as it was (--no-rollback-on-interrupt)"
    else:
        said = "interrupted before anything changed on the cluster: nothing to undo"
    walk.finish("INTERRUPTED", said)
    return f"{said}; results in {where}"


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job, a deleted pod) handled as Ctrl-C: the same clean stop."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def early_stop_overrides(scenario: Scenario) -> list[str]:
    """A step ends once decided: when the scenario sets no ``load.early_stop`` and measures a
    minute or more, looks from a third of the measured window (at most 30 s in), at most five
    of them (each look spends a share of the policy's error rate, so fewer looks keep the
    bounds tight). Shorter steps get none: a look a few seconds in would stop the canary
    before the comparison with the baseline has its minimum of samples."""
    load = scenario.load
    if load.early_stop is not None or load.measured_s < EARLY_STOP_FROM_S:
        return []
    measured = load.measured_s
    min_s = round(min(30.0, measured / 3), 3)
    every_s = round(max(5.0, (measured - min_s) / 5), 3)
    return [f"load.early_stop={{every_s: {every_s}, min_s: {min_s}}}"]


def hold_hint(canary: dict[str, Any], comparison: Comparison | None) -> str | None:
    """How long a step would have to measure to decide, as one line; None when unknown."""
    needed = seconds_to_decide(canary, comparison)
    if needed is None:
        return None
    seconds, measured = needed
    return (
        f"a step measured for about {seconds} s (this one measured {measured:.0f} s) would "
        f"decide, if the service behaves as measured: rerun with "
        f"--set load.duration_s={seconds}"
    )


def seconds_to_decide(
    verdict: dict[str, Any], comparison: Comparison | None = None
) -> tuple[int, float] | None:
    """(seconds a run would have to measure to decide, seconds this one measured), from the
    run's undecided critical objectives (the judge's own "about N requests would decide")
    and the comparison's sample minimum; None when neither says."""
    summary = verdict.get("summary") or {}
    requests = int(summary.get("requests") or 0)
    duration = float(summary.get("duration_s") or 0.0)
    if duration <= 0:
        return None
    factors: list[float] = []
    for objective in verdict.get("objectives", []):
        if not objective.get("critical") or objective.get("verdict") != "INCONCLUSIVE":
            continue
        reason = str(objective.get("reason", ""))
        if (found := _MORE_REQUESTS.search(reason)) and requests:
            factors.append(int(found.group(1).replace(",", "")) / requests)
        elif found := _MORE_SECONDS.search(reason):
            factors.append(int(found.group(1).replace(",", "")) / duration)
    if comparison is not None and comparison.decision is CanaryDecision.HOLD:
        for m in comparison.metrics:
            fewest = min(m.n_canary, m.n_baseline)
            if m.critical and fewest < comparison.min_samples:
                factors.append(comparison.min_samples / max(fewest, 1))
    if not factors:
        return None
    return math.ceil(duration * max(factors) * 1.1), duration  # a tenth more: estimates are noisy


def _only_run(folder: Path) -> Path:
    runs = [p for p in folder.iterdir() if p.is_dir()]
    if len(runs) != 1:
        raise UsageError(f"{folder}: expected one run folder, found {len(runs)}")
    return runs[0]


def _deciding(verdict: dict[str, Any]) -> str:
    """The critical objectives behind a FAIL (or, failing none, the undecided ones), by name
    with the judge's reason, for the step's one line."""
    critical = [o for o in verdict.get("objectives", []) if o.get("critical")]
    for kind in ("FAIL", "INCONCLUSIVE"):
        # the judge's "; about N requests would decide" is left to the step's own hint
        named = [f"{o['name']} ({str(o['reason']).split('; about ')[0]})"
                 for o in critical if o.get("verdict") == kind]  # fmt: skip
        if named:
            return "; ".join(named)
    return ""


def _stopped_early(folder: Path) -> bool:
    """Whether the run in ``folder`` ended on an early-stop decision (its manifest says)."""
    with contextlib.suppress(OSError, ValueError, UsageError, KeyError, TypeError):
        manifest = json.loads((_only_run(folder) / "manifest.json").read_text(encoding="utf-8"))
        return bool((manifest["load"].get("early_stop") or {}).get("stopped"))
    return False


def read_verdict(run_dir: Path) -> dict[str, Any]:
    """A run's verdict.json; a run that wrote none reads as INVALID."""
    path = run_dir / "verdict.json"
    if not path.is_file():
        return {"decision": Decision.INVALID.value}
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _decision(verdict: dict[str, Any]) -> Decision:
    return Decision(verdict["decision"])
