"""One probe of a capacity search, read back from its run folder: did the service hold the
load, how close to the edge was it (the pressure the search interpolates on), what it served,
and what the server showed while it did (the binding constraint's evidence)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.collectors.stored import read_collection
from harness.errors import ResultsError
from harness.records.run_dir import read_manifest
from harness.spec.policy import Band, Policy

#: Server and GPU gauges reported at each probe: metric -> label.
SERVER_STATE = {
    "server.queue_waiting": "requests waiting",
    "server.requests_running": "requests running",
    "server.kv_cache_usage": "KV-cache usage",
    "gpu.utilization": "GPU utilization",
    "gpu.power": "GPU power",
}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe measured at one load level."""

    level: float
    run_dir: Path
    decision: str  # the run's verdict: PASS, WARN, FAIL, INCONCLUSIVE, INVALID
    passed: bool | None  # every critical objective PASSes; None: undecided
    pressure: float | None  # the binding objective's estimate over its target
    binding: tuple[str, ...]  # critical objectives beyond their target, "name: reason"
    undecided: tuple[str, ...]  # critical objectives the judge could not decide
    requests: int
    duration_s: float
    request_rate: float | None
    output_token_rate: float | None
    goodput: float | None
    server: dict[str, dict[str, float]]  # metric -> {"mean", "max"}
    preemptions: float | None  # over the measured window
    energy_j: float | None  # GPU energy over the measured window (NVML or DCGM)
    hint: str | None  # the judge's "about N requests would decide", where undecided
    ttft_mean: float | None = None  # seconds: grows when requests queue for a slot
    itl_mean: float | None = None  # seconds: grows when every step is longer

    def to_json(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "run_dir": str(self.run_dir),
            "decision": self.decision,
            "passed": self.passed,
            "pressure": self.pressure,
            "binding": list(self.binding),
            "undecided": list(self.undecided),
            "requests": self.requests,
            "duration_s": self.duration_s,
            "request_rate": self.request_rate,
            "output_token_rate": self.output_token_rate,
            "goodput": self.goodput,
            "server": self.server,
            "preemptions": self.preemptions,
            "energy_j": self.energy_j,
            "ttft_mean_s": self.ttft_mean,
            "itl_mean_s": self.itl_mean,
        }


def read_probe(level: float, run_dir: Path, policy: Policy) -> ProbeResult:
    """The probe's result from its verdict.json and collector data."""
    path = run_dir / "verdict.json"
    if not path.is_file():
        return _invalid(level, run_dir, "the run wrote no verdict")
    verdict = json.loads(path.read_text(encoding="utf-8"))
    decision = str(verdict["decision"])
    critical = [o for o in verdict.get("objectives", []) if o.get("critical")]
    beyond = [o for o in critical if o.get("verdict") in ("WARN", "FAIL")]
    undecided = [o for o in critical if o.get("verdict") == "INCONCLUSIVE"]
    passed: bool | None
    if decision == "INVALID":
        passed = None
    elif beyond:
        passed = False  # decided past a target: a load the service does not hold
    elif undecided:
        passed = None
    else:
        passed = True
    summary = verdict.get("summary") or {}
    server, preemptions, energy = _server_state(run_dir)
    hints = [str(o["reason"]) for o in undecided if "would decide" in str(o.get("reason"))]
    return ProbeResult(
        level=level,
        run_dir=run_dir,
        decision=decision,
        passed=passed,
        pressure=_pressure(critical, policy),
        binding=tuple(f"{o['name']}: {o['reason']}" for o in beyond),
        undecided=tuple(f"{o['name']}: {o['reason']}" for o in undecided),
        requests=int(summary.get("requests") or 0),
        duration_s=float(summary.get("duration_s") or 0.0),
        request_rate=summary.get("request_rate"),
        output_token_rate=summary.get("output_token_rate"),
        goodput=summary.get("goodput"),
        server=server,
        preemptions=preemptions,
        energy_j=energy,
        hint="; ".join(hints) or None,
        ttft_mean=(summary.get("ttft_s") or {}).get("mean"),
        itl_mean=(summary.get("itl_s") or {}).get("mean"),
    )


def _pressure(critical: list[dict[str, Any]], policy: Policy) -> float | None:
    """The largest estimate / target over the critical objectives (target / estimate where
    higher is better): 1 at the edge, above it past the target."""
    by_name = {o.name: o for o in policy.objectives}
    worst: float | None = None
    for o in critical:
        objective, estimate = by_name.get(str(o.get("name"))), o.get("estimate")
        if objective is None or not isinstance(estimate, int | float):
            continue
        target = objective.target
        bound = target.max if isinstance(target, Band) else target
        if bound is None or bound <= 0:
            continue
        if objective.judged.better == "lower":
            ratio = float(estimate) / bound
        elif estimate > 0:
            ratio = bound / float(estimate)
        else:
            continue
        worst = ratio if worst is None else max(worst, ratio)
    return worst


def _server_state(run_dir: Path) -> tuple[dict[str, dict[str, float]], float | None, float | None]:
    try:
        stored = read_collection(run_dir, read_manifest(run_dir))
    except ResultsError:
        return {}, None, None
    if stored is None:
        return {}, None, None
    state = {
        metric: {"mean": float(np.mean(values)), "max": float(np.max(values))}
        for metric in SERVER_STATE
        if (values := stored.series.get(metric)) is not None and values.size
    }
    return state, stored.scalars.get("server.preemptions"), stored.scalars.get("gpu.energy")


def _invalid(level: float, run_dir: Path, why: str) -> ProbeResult:
    return ProbeResult(level, run_dir, "INVALID", None, None, (), (why,), 0, 0.0, None, None,
                       None, {}, None, None, None)  # fmt: skip
