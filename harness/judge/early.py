"""Early decision: judge the run at planned looks while it goes, and stop once every
critical objective is decided.

Looking repeatedly at a test and stopping at the first decisive look inflates its error
rate, unless each look spends only part of it. With K planned looks each is judged at
confidence 1 - (1 - c) / K (Bonferroni, the simplest alpha-spending rule: it holds
whatever the looks' correlation), so the chance that any look decides wrongly stays under
1 - c. The final verdict of such a run is judged at the same per-look confidence.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from harness.judge.analysis import analyse
from harness.judge.classify import evaluate
from harness.judge.verdict import Classification
from harness.records.log import RECORD_SCHEMA
from harness.records.record import RequestRecord
from harness.spec.load import LoadSpec, planned_looks
from harness.spec.policy import Policy


def per_look_confidence(confidence: float, load: LoadSpec) -> float:
    """The confidence each look is judged at so that all of them together keep ``confidence``."""
    return 1.0 - (1.0 - confidence) / planned_looks(load)


class EarlyJudge:
    """Keeps the measured records as they come and judges them at each look (the look runs
    in a worker thread, off the load generator's event loop)."""

    def __init__(self, policy: Policy, load: LoadSpec) -> None:
        self.confidence = per_look_confidence(policy.confidence, load)
        self.policy = policy.model_copy(update={"confidence": self.confidence})
        self.load = load
        self.records: list[RequestRecord] = []
        self.looks = 0

    def observe(self, record: RequestRecord) -> None:
        """On the load's event loop for every record: keep it, nothing more."""
        if record.phase == "measure":
            self.records.append(record)

    def __call__(self, measure_start: float) -> str | None:
        """A reason to stop now, or None to go on."""
        self.looks += 1
        records = self.records[:]  # the load keeps appending while this look runs in a thread
        if not records:
            return None
        table = pa.Table.from_pylist([r.to_row() for r in records], schema=RECORD_SCHEMA)
        metrics = analyse(table, measure_start, time.monotonic(), self.policy.goodput)
        verdict = evaluate(self.policy, metrics)
        critical = [o for o in verdict.objectives if o.critical]
        if not critical or any(o.verdict is Classification.INCONCLUSIVE for o in critical):
            return None
        decided = ", ".join(f"{o.name} {o.verdict.value}" for o in critical)
        return (
            f"every critical objective decided at look {self.looks} on {metrics.attempted} "
            f"requests ({decided}), each look at {self.confidence:.4g} confidence"
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
