"""`harness gate SCENARIO --isvc NAME --namespace NS`: walk a KServe canary 10 -> 50 -> 100 %,
judging each step against the policy and against the baseline, and promote, hold or roll back.

Each step: set the weight, wait until KServe reports it in effect, run the scenario against
the canary and the baseline at the same time (two `harness run` processes, so both see the
same cluster), judge the canary, compare it with the baseline, decide (harness.gate.steps).
Without --apply nothing on the cluster changes: every patch is printed and journalled, the
load still runs and is judged. Everything goes to gate.jsonl as it happens, and gate.json at
the end, in the gate's folder.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.errors import ExitCode, UsageError
from harness.flows.step_runs import (
    GateOptions,
    StepRunner,
    drive,
    undo_on_interrupt,
)
from harness.gate.cluster import Cluster, ClusterError
from harness.gate.kserve import (
    ServiceState,
    promote_patch,
    rollback_patches,
    start_patch,
    step_patch,
)
from harness.gate.steps import GATE_SCHEMA, STEP_EXIT, Journal, StepDecision, StepOutcome
from harness.records.run_dir import new_run_dir
from harness.report.files import write_atomic


@dataclass(frozen=True, slots=True, kw_only=True)
class GateRequest(GateOptions):
    isvc: str
    steps: tuple[int, ...] = (10, 50, 100)
    storage_uri: str | None = None
    previous_storage_uri: str | None = None
    canary_url: str | None = None
    baseline_url: str | None = None
    openai_path: str = "/openai/v1"


def parse_steps(text: str) -> tuple[int, ...]:
    """ "10,50,100" -> (10, 50, 100): rising percentages in 1..100, the last 100."""
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--steps {text}: expected rising percentages, e.g. 10,50,100") from None
    rising = all(a < b for a, b in itertools.pairwise(steps))
    if not steps or not rising or steps[0] < 1 or steps[-1] != 100:
        raise UsageError(f"--steps {text}: expected rising percentages ending at 100")
    return steps


def gate_and_report(
    req: GateRequest, console: Console, announce: Callable[[str], None]
) -> ExitCode:
    """The command: the walk, its journal, and the exit code of its decision."""
    _, runner = StepRunner.for_scenario(req.scenario_file, req.policy_file, req.overrides)
    cluster = Cluster.connect(req.namespace, req.isvc, req.apply, req.kubeconfig)
    _, gate_dir = new_run_dir(req.out, f"gate-{req.isvc}")
    journal = Journal(gate_dir / "gate.jsonl")

    def patched(body: dict[str, Any], applied: bool) -> None:
        journal.write("patch", body=body, applied=applied)
        announce(f"{'patch' if applied else 'would patch'} {cluster.where}: {json.dumps(body)}")

    cluster.on_patch = patched
    walk = _Walk(req, cluster, journal, gate_dir, runner, announce)
    return drive(walk, journal, gate_dir, console)


class _Walk:
    def __init__(
        self,
        req: GateRequest,
        cluster: Cluster,
        journal: Journal,
        gate_dir: Path,
        runner: StepRunner,
        announce: Callable[[str], None],
    ) -> None:
        self.req, self.cluster, self.journal = req, cluster, journal
        self.gate_dir, self.runner, self.announce = gate_dir, runner, announce
        self.hint: str | None = None
        self.promoting = False
        self.outcomes: list[StepOutcome] = []
        self.decision, self.reason = "RUNNING", ""
        self.uri_before: str | None = None
        self.previous_uri: str | None = None
        self.moved = False  # traffic left the last verified state

    def run(self) -> ExitCode:
        req = self.req
        state = self.cluster.read()
        self.journal.write("read", storage_uri=state.storage_uri, canary=state.canary_percent,
                           mode=state.mode)  # fmt: skip
        if not state.splits_traffic:
            raise UsageError(
                f"{self.cluster.where} runs in {state.mode} mode, which has no canary traffic "
                "split: there is nothing to step"
            )
        self.uri_before = state.storage_uri
        first = req.steps[0]
        if req.storage_uri is not None:
            self.previous_uri = state.storage_uri
            self.cluster.patch(start_patch(req.storage_uri, first, self.previous_uri))
            self.moved = req.apply
        else:
            self.previous_uri = req.previous_storage_uri or state.previous_uri
        for percent in req.steps:
            if percent == 100:
                return self._promote()
            if percent != first or req.storage_uri is None:
                self.cluster.patch(step_patch(percent))
                self.moved = req.apply
            state = self._wait(percent, state)
            outcome = self._judge(percent, state)
            self.outcomes.append(outcome)
            self.journal.write("step", **outcome.to_json())
            hint = f"; {self.hint}" if self.hint and outcome.decision is StepDecision.HOLD else ""
            self.announce(f"step {percent} %: {outcome.decision.value}: {outcome.reason}{hint}")
            if outcome.decision is StepDecision.HOLD:
                hint = f"; {self.hint}" if self.hint else ""
                return self.finish("HOLD", f"{percent} % kept: {outcome.reason}{hint}",
                                   STEP_EXIT[outcome.decision])  # fmt: skip
            if outcome.decision in (StepDecision.ROLLBACK, StepDecision.INVALID):
                self._rollback()
                return self.finish(outcome.decision.value, f"at {percent} %: {outcome.reason}",
                                   STEP_EXIT[outcome.decision])  # fmt: skip
        return self._promote()

    def _wait(self, percent: int, state: ServiceState) -> ServiceState:
        if not self.req.apply:
            self.journal.write("wait", percent=percent, skipped="dry run: nothing was changed")
            return state
        self.journal.write("wait", percent=percent, timeout_s=self.req.ready_timeout_s)
        try:
            state = self.cluster.wait_in_effect(percent, self.req.ready_timeout_s, self.req.poll_s)
        except ClusterError:
            self._rollback()
            raise
        self.journal.write("in_effect", percent=percent, revision=state.latest_ready)
        return state

    def _judge(self, percent: int, state: ServiceState) -> StepOutcome:
        canary_url = self.req.canary_url or _tag_url(state, "latest", self.req.openai_path)
        baseline_url = self.req.baseline_url or _tag_url(state, "prev", self.req.openai_path)
        if canary_url is None or baseline_url is None:
            raise UsageError(
                f"{self.cluster.where} has no latest-/prev- tagged URLs: set the annotation "
                'serving.kserve.io/enable-tag-routing: "true", or give --canary-url and '
                "--baseline-url"
            )
        self.journal.write("runs", percent=percent, canary_url=canary_url,
                           baseline_url=baseline_url)  # fmt: skip
        urls = {"canary": canary_url, "baseline": baseline_url}
        self.announce(f"step {percent} %: the scenario against the canary ({canary_url}) and "
                      f"the baseline ({baseline_url}), at once")  # fmt: skip
        judged = self.runner.judge(percent, urls, self.gate_dir / f"step-{percent}")
        self.hint = judged.hint
        return judged.outcome

    def _promote(self) -> ExitCode:
        self.promoting = True  # decided: an interrupt from here on leaves it promoted
        self.cluster.patch(promote_patch())
        if self.req.apply:
            self.cluster.wait_in_effect(100, self.req.ready_timeout_s, self.req.poll_s)
            self.journal.write("in_effect", percent=100)
        return self.finish("PROMOTED", "every step passed; the canary takes all the traffic",
                           ExitCode.PASS)  # fmt: skip

    def _rollback(self) -> None:
        """Revert storageUri (where known), then pin 0 %; idempotent."""
        if self.previous_uri is None:
            self.announce(
                "note: the previous storageUri is not known (no --previous-storage-uri, no "
                "annotation): traffic goes back to 0 % but storageUri could not be reverted"
            )
        for body in rollback_patches(self.previous_uri):
            self.cluster.patch(body)
        self.journal.write("rolled_back", storage_uri=self.previous_uri)

    def interrupted(self) -> str:
        """Ctrl-C or SIGTERM mid-walk: stop the runs in order, then roll back traffic that
        moved (unless told not to), and say where the service was left."""
        self.runner.stop()
        self.journal.write("interrupted", moved=self.moved, promoting=self.promoting)
        if self.promoting:
            said = "interrupted while the promotion took effect: it was decided, and stays"
            self.finish("INTERRUPTED", said)
            return said
        return undo_on_interrupt(self, self._rollback, self.moved, self.req.rollback_on_interrupt,
                                 "the canary was rolled back", str(self.gate_dir))  # fmt: skip

    def finish(self, decision: str, reason: str, code: ExitCode = ExitCode.INVALID) -> ExitCode:
        self.decision, self.reason = decision, reason
        after = None
        with contextlib.suppress(ClusterError):
            after = self.cluster.read().storage_uri if self.req.apply else self.uri_before
        document = {
            "schema": GATE_SCHEMA,
            "isvc": self.req.isvc,
            "namespace": self.req.namespace,
            "applied": self.req.apply,
            "steps": [o.to_json() for o in self.outcomes],
            "planned_steps": list(self.req.steps),
            "decision": decision,
            "reason": reason,
            "storage_uri_before": self.uri_before,
            "storage_uri_after": after,
            "previous_storage_uri": self.previous_uri,
            "hint": self.hint if decision == "HOLD" else None,
            "patches": self.cluster.sent,
        }
        write_atomic(self.gate_dir / "gate.json", json.dumps(document, indent=2) + "\n")
        self.journal.write("decision", decision=decision, reason=reason)
        return code


def _tag_url(state: ServiceState, tag: str, openai_path: str) -> str | None:
    url = state.tagged_url(tag)
    return url.rstrip("/") + openai_path if url else None
