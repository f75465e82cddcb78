"""capacity.json (versioned, every probe listed) and summary.md of a capacity search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.capacity.plan import CPU_HPA_NOTE, FleetPlan
from harness.capacity.probe import SERVER_STATE, ProbeResult

CAPACITY_SCHEMA = 1


@dataclass
class CapacityReport:
    """The search's outcome: the bracket, the probes, the binding constraint, the plan."""

    scenario: str
    policy: str
    unit: str  # "users" (closed loop) or "req/s" (open loop)
    tolerance: float
    outcome: str  # FOUND, ABOVE (no probe failed), NONE (no probe passed), UNDECIDED, INVALID
    reason: str
    probes: list[ProbeResult] = field(default_factory=list)
    lo: ProbeResult | None = None  # the highest load held
    hi: ProbeResult | None = None  # the lowest load not held
    plan: FleetPlan | None = None
    cost_per_1k_tokens: float | None = None
    energy_j_per_1k_tokens: float | None = None

    def binding(self) -> dict[str, Any] | None:
        """What breaks first: the objectives past their target at the lowest load not held,
        and what the server showed there, beside the highest load held."""
        if self.hi is None:
            return None
        return {
            "at_level": self.hi.level,
            "objectives": list(self.hi.binding or self.hi.undecided),
            "server_at_failure": self.hi.server,
            "server_at_capacity": self.lo.server if self.lo is not None else {},
            "preemptions_at_failure": self.hi.preemptions,
            "signs": signs(min(self.probes, key=lambda p: p.level, default=None), self.hi),
        }

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.lo, self.hi
        return {
            "schema": CAPACITY_SCHEMA,
            "scenario": self.scenario,
            "policy": self.policy,
            "unit": self.unit,
            "tolerance": self.tolerance,
            "outcome": self.outcome,
            "reason": self.reason,
            "capacity": {
                "level": lo.level if lo else None,
                "bracket": [lo.level if lo else None, hi.level if hi else None],
                "request_rate": lo.request_rate if lo else None,
                "output_token_rate": lo.output_token_rate if lo else None,
                "goodput": lo.goodput if lo else None,
            },
            "binding_constraint": self.binding(),
            "plan": self.plan.to_json() if self.plan else None,
            "cost_per_1k_output_tokens": self.cost_per_1k_tokens,
            "energy_j_per_1k_output_tokens": self.energy_j_per_1k_tokens,
            "probes": [p.to_json() for p in self.probes],
            "spent": {
                "probes": len(self.probes),
                "requests": sum(p.requests for p in self.probes),
                "measured_s": round(sum(p.duration_s for p in self.probes), 1),
            },
        }


def signs(first: ProbeResult | None, hi: ProbeResult) -> list[str]:
    """What changed between the lightest probe and the first load not held, read as causes:
    requests queueing for a batch slot (TTFT grows, ITL does not), every step growing with
    the batch (ITL grows), a full KV cache, preemptions, a saturated GPU."""
    out = []
    ttft = _growth(first.ttft_mean if first else None, hi.ttft_mean)
    itl = _growth(first.itl_mean if first else None, hi.itl_mean)
    waiting = hi.server.get("server.queue_waiting", {}).get("mean")
    if ttft is not None and ttft > 1.5 and (itl is None or ttft > 1.5 * itl):
        seen = f"; {waiting:.1f} requests waiting on average" if waiting else ""
        out.append(f"requests queue before their first token (TTFT mean x{ttft:.1f} from the "
                   f"lightest probe, ITL x{itl or 1:.2f}{seen}): the batch limit "
                   "(max_num_seqs) or the prefill budget holds them back")  # fmt: skip
    if itl is not None and itl > 1.2:
        out.append(f"every step is longer with more sequences in it (ITL mean x{itl:.2f} from "
                   "the lightest probe): the latency grows with the batch")  # fmt: skip
    kv = hi.server.get("server.kv_cache_usage", {}).get("max")
    if kv is not None and kv >= 0.9:
        out.append(f"the KV cache is full (up to {kv:.0%} used)")
    if hi.preemptions:
        out.append(f"{hi.preemptions:.0f} requests preempted (KV cache exhausted)")
    gpu = hi.server.get("gpu.utilization", {}).get("mean")
    if gpu is not None and gpu >= 0.95:
        out.append(f"the GPU is saturated ({gpu:.0%} utilization)")
    return out


def _growth(before: float | None, after: float | None) -> float | None:
    return after / before if before and after else None


def summary_markdown(report: CapacityReport) -> str:
    """summary.md: the answer first, then the probes and the plan."""
    lo, hi, unit = report.lo, report.hi, report.unit
    lines = [f"# Capacity: {report.scenario}", "", f"**{report.outcome}**: {report.reason}", ""]
    if lo is not None:
        upper = f"{hi.level:g}" if hi else "not reached"
        lines += [
            f"- Highest load held: **{lo.level:g} {unit}** (bracket {lo.level:g} – {upper}, "
            f"tolerance {report.tolerance:.0%})",
            f"- At that load: {_num(lo.request_rate)} req/s, "
            f"{_num(lo.output_token_rate)} output tokens/s, goodput {_num(lo.goodput)} req/s",
        ]
    binding = report.binding()
    if binding is not None:
        lines.append(f"- Breaks first at {binding['at_level']:g} {unit}: "
                     + "; ".join(binding["objectives"]))  # fmt: skip
        lines += [f"  - {sign}" for sign in binding["signs"]]
    if report.plan is not None:
        plan = report.plan
        predictor = plan.patch()["spec"]["predictor"]
        lines += [
            f"- For a peak of {plan.peak_rps:g} req/s with {plan.headroom:.0%} headroom "
            f"(each replica planned at {plan.per_replica_rps:.3g} req/s): minReplicas "
            f"{plan.min_replicas}, maxReplicas {plan.max_replicas}, scaleMetric "
            f"{predictor['scaleMetric']}, scaleTarget {predictor['scaleTarget']}",
            f"- Why not the CPU HPA: {CPU_HPA_NOTE}",
        ]
    if report.cost_per_1k_tokens is not None:
        lines.append(f"- Cost: {report.cost_per_1k_tokens:.4g} per 1 000 output tokens")
    if report.energy_j_per_1k_tokens is not None:
        lines.append(f"- Energy: {report.energy_j_per_1k_tokens:.4g} J per 1 000 output tokens")
    head = f"| # | load ({unit}) | verdict | held | pressure | req/s | tokens/s | goodput | "
    rule = "|---:|---:|---|---|---:|---:|---:|---:|" + "---:|" * len(SERVER_STATE) + "---|"
    lines += ["", "## Probes", "", head + " | ".join(SERVER_STATE.values()) + " | run |", rule]
    for i, p in enumerate(report.probes, 1):
        held = {True: "yes", False: "no", None: "undecided"}[p.passed]
        state = " | ".join(_num(p.server.get(m, {}).get("mean")) for m in SERVER_STATE)
        lines.append(f"| {i} | {p.level:g} | {p.decision} | {held} | {_num(p.pressure)} | "
                     f"{_num(p.request_rate)} | {_num(p.output_token_rate)} | "
                     f"{_num(p.goodput)} | {state} | `{p.run_dir.name}` |")  # fmt: skip
    spent = report.to_json()["spent"]
    lines += ["", f"{spent['probes']} probes, {spent['requests']:,} requests, "
              f"{spent['measured_s']:g} s measured.", ""]  # fmt: skip
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
