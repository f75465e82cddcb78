"""Early decision: judge the run at planned looks while it goes, and stop once every
critical objective is decided. Each look folds only the records since the last one into
running tallies (harness.judge.looks), so its cost does not grow with the run.

Looking repeatedly at a test and stopping at the first decisive look inflates its error
rate, unless each look spends only part of it. With K planned looks each is judged at
confidence 1 - (1 - c) / K (Bonferroni, the simplest alpha-spending rule: it holds
whatever the looks' correlation), so the chance that any look decides wrongly stays under
1 - c. The final verdict of such a run is judged at the same per-look confidence.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from harness.judge.classify import classify
from harness.judge.looks import LookTallies
from harness.judge.served import ServedRule
from harness.judge.verdict import Classification
from harness.records.record import RequestRecord
from harness.spec.load import LoadSpec, planned_looks
from harness.spec.policy import Policy

#: The interpreter's switch interval while a look runs (its thread and the load's loop share
#: the interpreter lock).
LOOK_SWITCH_S = 0.0005


def per_look_confidence(confidence: float, load: LoadSpec) -> float:
    """The confidence each look is judged at so that all of them together keep ``confidence``."""
    return 1.0 - (1.0 - confidence) / planned_looks(load)


class EarlyJudge:
    """Keeps the measured records as they come and judges them at each look (the look runs
    in a worker thread, off the load generator's event loop)."""

    def __init__(self, policy: Policy, load: LoadSpec, expect_backend: Iterable[str] = ()) -> None:
        self.confidence = per_look_confidence(policy.confidence, load)
        self.policy = policy.model_copy(update={"confidence": self.confidence})
        self.load = load
        self.pending: deque[RequestRecord] = deque()  # appends and pops are thread-safe
        self.tallies = LookTallies(policy.goodput, ServedRule.of(policy, expect_backend))
        self.looks = 0

    def observe(self, record: RequestRecord) -> None:
        """On the load's event loop for every record: queue it, nothing more."""
        if record.phase == "measure":
            self.pending.append(record)

    def __call__(self, measure_start: float) -> str | None:
        """A reason to stop now, or None to go on."""
        self.looks += 1
        new = [self.pending.popleft() for _ in range(len(self.pending))]
        # While this thread holds the interpreter lock the load's event loop waits, up to
        # the switch interval (5 ms by default): hand it back every 0.5 ms meanwhile.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, LOOK_SWITCH_S))
        try:
            return self._judge(new, measure_start)
        finally:
            sys.setswitchinterval(interval)

    def _judge(self, new: list[RequestRecord], measure_start: float) -> str | None:
        self.tallies.fold(new, measure_start)
        if self.tallies.requests == 0:
            return None
        duration = time.monotonic() - measure_start
        critical = [o for o in self.policy.objectives if o.critical]
        decided = []
        for objective in critical:
            if objective.window is not None:
                return None  # judged per window at the end only
            est = self.tallies.estimate(objective, duration, self.confidence)
            verdict, _ = classify(objective, est)
            if verdict is Classification.INCONCLUSIVE:
                return None
            decided.append(f"{objective.name} {verdict.value}")
        if not decided:
            return None
        return (
            f"every critical objective decided at look {self.looks} on "
            f"{self.tallies.requests} requests ({', '.join(decided)}), each look at "
            f"{self.confidence:.4g} confidence"
        )

    def manifest(self, stopped: str | None) -> dict[str, Any]:
        early = self.load.early_stop
        assert early is not None
        return {
            "every_s": early.every_s,
            "min_s": early.min_s,
            "looks_planned": planned_looks(self.load),
            "looks_taken": self.looks,
            "confidence_per_look": self.confidence,
            "stopped": stopped,
        }
