"""What one traffic step decides, and the gate's journal.

A step runs the scenario against the canary and the baseline at the same time, then:

- ROLLBACK when the canary's verdict is FAIL or it is worse than the baseline (the
  comparison says ROLLBACK);
- INVALID when either run could not be trusted (the load generator saturated, the target was
  unreachable): nothing was measured, so nothing is promoted, and traffic that moved goes back;
- HOLD when either is undecided (too little data): the weight stays, the gate exits 3;
- PROMOTE otherwise: on to the next step.
"""

from __future__ import annotations

import enum
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.canary.compare import CanaryDecision
from harness.errors import ExitCode
from harness.judge.verdict import Decision

#: The version of gate.json's layout (both paths, KServe and LiteLLM).
GATE_SCHEMA = 1


class StepDecision(enum.StrEnum):
    PROMOTE = "PROMOTE"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK"
    INVALID = "INVALID"


STEP_EXIT = {
    StepDecision.PROMOTE: ExitCode.PASS,
    StepDecision.HOLD: ExitCode.INCONCLUSIVE,
    StepDecision.ROLLBACK: ExitCode.FAIL,
    StepDecision.INVALID: ExitCode.INVALID,
}


@dataclass(frozen=True, slots=True)
class StepOutcome:
    percent: int
    decision: StepDecision
    reason: str
    canary: Decision
    baseline: Decision
    comparison: CanaryDecision | None

    def to_json(self) -> dict[str, Any]:
        return {
            "percent": self.percent,
            "decision": self.decision.value,
            "reason": self.reason,
            "canary": self.canary.value,
            "baseline": self.baseline.value,
            "comparison": self.comparison.value if self.comparison is not None else None,
        }


def decide_step(
    percent: int,
    canary: Decision,
    baseline: Decision,
    comparison: CanaryDecision | None,
    comparison_reason: str,
    canary_reason: str = "",
) -> StepOutcome:
    """The step's decision from the canary's verdict, the baseline's, and the comparison;
    ``canary_reason`` names what decided the canary's verdict (its failing objectives)."""
    said = f": {canary_reason}" if canary_reason else ""
    if Decision.INVALID in (canary, baseline):
        which = "canary" if canary is Decision.INVALID else "baseline"
        return StepOutcome(percent, StepDecision.INVALID,
                           f"the {which} run is INVALID: nothing it measured can be trusted",
                           canary, baseline, comparison)  # fmt: skip
    if canary is Decision.FAIL:
        return StepOutcome(percent, StepDecision.ROLLBACK, f"the canary FAILs the policy{said}",
                           canary, baseline, comparison)  # fmt: skip
    if comparison is CanaryDecision.ROLLBACK:
        return StepOutcome(percent, StepDecision.ROLLBACK,
                           f"the canary is worse than the baseline: {comparison_reason}",
                           canary, baseline, comparison)  # fmt: skip
    if canary is Decision.INCONCLUSIVE or comparison is CanaryDecision.HOLD:
        why = (
            f"the canary's verdict is INCONCLUSIVE{said}"
            if canary is Decision.INCONCLUSIVE
            else f"the comparison holds: {comparison_reason}"
        )
        return StepOutcome(percent, StepDecision.HOLD, why, canary, baseline, comparison)
    return StepOutcome(percent, StepDecision.PROMOTE,
                       f"the canary's verdict is {canary.value} and it is no worse than the "
                       "baseline",
                       canary, baseline, comparison)  # fmt: skip


class Journal:
    """gate.jsonl: every read, patch, wait and verdict, one JSON line each, flushed as it
    happens so an interrupted gate leaves its trail."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._file.write(json.dumps({"at": stamp, "event": event, **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
