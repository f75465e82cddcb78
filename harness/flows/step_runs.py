"""One gate step's load: the scenario run against the canary and the baseline at the same
time (two `harness run` processes, so both see the same cluster), judged and compared.

Shared by the KServe walk (flows/gate) and the LiteLLM blue-green switch (flows/bluegreen).
The runs are child processes so that each keeps its own load loop, its own folder and its
own verdict; an interrupt stops them in order (SIGINT, as a terminal's Ctrl-C would) before
the gate decides what to do with the cluster.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.canary.compare import CanaryDecision, Comparison
from harness.errors import ExitCode, UsageError
from harness.flows.evaluate import compare_runs
from harness.gate.steps import StepOutcome, decide_step
from harness.judge.verdict import Decision
from harness.spec.policy import load_policy
from harness.spec.scenario import Scenario

#: How long a run may take to stop after SIGINT before it is killed.
STOP_GRACE_S = 30.0
_MORE_REQUESTS = re.compile(r"about ([\d,]+) requests would decide")
_MORE_SECONDS = re.compile(r"about ([\d,]+) s of measurement would decide")


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

    def __init__(self, scenario_file: Path, policy_file: Path, overrides: Sequence[str]) -> None:
        self.scenario_file, self.policy_file = scenario_file, policy_file
        self.overrides = tuple(overrides)
        self.running: list[subprocess.Popen[bytes]] = []

    def judge(self, percent: int, urls: dict[str, str | None], step_dir: Path) -> StepJudged:
        """Run the scenario against each role's URL at once; judge the canary and compare it
        with the baseline (when there is one)."""
        folders = {role: step_dir / role for role, url in urls.items() if url is not None}
        procs = {role: self._start(urls[role] or "", folder) for role, folder in folders.items()}
        codes = {role: proc.wait() for role, proc in procs.items()}
        self.running.clear()
        if ExitCode.USAGE in codes.values():
            raise UsageError(f"the step's runs stopped on bad input: see {step_dir}")
        dirs = {role: _only_run(folder) for role, folder in folders.items()}
        verdicts = {role: _verdict(folder) for role, folder in dirs.items()}
        decisions = {role: _decision(doc) for role, doc in verdicts.items()}
        comparison: Comparison | None = None
        if "baseline" in dirs and Decision.INVALID not in decisions.values():
            policy = load_policy(self.policy_file)
            comparison = compare_runs(dirs["canary"], dirs["baseline"], policy)
        baseline = decisions.get("baseline", Decision.PASS)
        outcome = decide_step(
            percent,
            decisions["canary"],
            baseline,
            comparison.decision if comparison is not None else None,
            comparison.reason if comparison is not None else "",
        )
        hint = hold_hint(verdicts["canary"], comparison)
        return StepJudged(outcome, dirs, comparison, hint)

    def _start(self, url: str, folder: Path) -> subprocess.Popen[bytes]:
        folder.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "harness", "run", str(self.scenario_file), "--target",
                url, "--policy", str(self.policy_file), "--out", str(folder)]  # fmt: skip
        for item in self.overrides:
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


def early_stop_overrides(scenario: Scenario) -> list[str]:
    """A step ends once decided: when the scenario sets no ``load.early_stop``, looks from a
    third of the measured window, at most five of them (each look spends a share of the
    policy's error rate, so fewer looks keep the bounds tight)."""
    load = scenario.load
    if load.early_stop is not None:
        return []
    measured = load.measured_s
    min_s = round(min(30.0, measured / 3), 3)
    every_s = round(max(5.0, (measured - min_s) / 5), 3)
    return [f"load.early_stop={{every_s: {every_s}, min_s: {min_s}}}"]


def hold_hint(canary: dict[str, Any], comparison: Comparison | None) -> str | None:
    """How long a step would have to measure to decide, from the canary's undecided critical
    objectives (the judge's own "about N requests would decide") and the comparison's
    sample minimum; None when neither says."""
    summary = canary.get("summary") or {}
    requests = int(summary.get("requests") or 0)
    duration = float(summary.get("duration_s") or 0.0)
    if duration <= 0:
        return None
    factors: list[float] = []
    for objective in canary.get("objectives", []):
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
    seconds = math.ceil(duration * max(factors) * 1.1)  # a tenth more: the estimate is noisy
    return (
        f"a step measured for about {seconds} s (this one measured {duration:.0f} s) would "
        f"decide, if the service behaves as measured: rerun with "
        f"--set load.duration_s={seconds}"
    )


def _only_run(folder: Path) -> Path:
    runs = [p for p in folder.iterdir() if p.is_dir()]
    if len(runs) != 1:
        raise UsageError(f"{folder}: expected one run folder, found {len(runs)}")
    return runs[0]


def _verdict(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "verdict.json"
    if not path.is_file():
        return {"decision": Decision.INVALID.value}
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _decision(verdict: dict[str, Any]) -> Decision:
    return Decision(verdict["decision"])
