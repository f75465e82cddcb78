"""The study's results: study.json (versioned, every setting listed), the Pareto front of
throughput against the policy's latency objective, the best setting that passes, and the
tables people read (terminal and summary.md).

The front is taken over every measured setting, passing or not: a failing setting on it
shows what the policy costs in throughput. The best setting is the highest throughput among
those whose run PASSed the policy; throughputs within 1 % of the highest count as equal (a
fixed open-loop load gives every setting that keeps up the same throughput, up to noise), and
among them the lowest latency wins.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from optuna.trial import FrozenTrial

from harness.errors import UsageError
from harness.spec.metrics import METRICS
from harness.spec.policy import Band, Objective, Policy
from harness.spec.study import Study

STUDY_SCHEMA: Final = 1
#: What a setting's row shows, from its trial's user attributes (None where not measured).
ROW_ATTRS: Final = (
    "verdict", "throughput", "latency", "request_rate", "output_token_rate", "goodput",
    "ttft_p50_s", "ttft_p99_s", "itl_p50_s", "itl_p99_s", "e2el_p50_s", "e2el_p99_s",
    "requests", "duration_s", "run_dir", "capacity_level", "capacity_unit", "reason",
)  # fmt: skip
#: Throughputs this close to the best passing one are a tie, broken by latency.
SAME_THROUGHPUT: Final = 0.01
THROUGHPUT_UNITS: Final = {"output_token_rate": "tok/s", "request_rate": "req/s",
                           "goodput": "req/s"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LatencyAxis:
    """The policy objective the study minimises, and its target."""

    objective: str
    metric: str
    stat: str
    unit: str
    target: float | None

    def to_json(self) -> dict[str, Any]:
        return {"objective": self.objective, "metric": self.metric, "stat": self.stat,
                "unit": self.unit, "target": self.target}  # fmt: skip


def latency_axis(policy: Policy, name: str | None, where: str) -> LatencyAxis:
    """The named objective, or the policy's first critical latency objective (in seconds,
    lower is better); a policy without one cannot rank settings by latency (exit 2)."""

    def is_latency(o: Objective) -> bool:
        metric = METRICS[o.metric]
        return metric.unit == "s" and metric.better == "lower"

    if name is not None:
        found = next((o for o in policy.objectives if o.name == name), None)
        if found is None or not is_latency(found):
            names = ", ".join(o.name for o in policy.objectives if is_latency(o)) or "none"
            raise UsageError(f"{where}: latency_objective: {name!r} is not a latency "
                             f"objective of policy {policy.name!r} (its latency objectives: "
                             f"{names})")  # fmt: skip
    else:
        found = next((o for o in policy.objectives if o.critical and is_latency(o)), None)
        if found is None:
            raise UsageError(f"{where}: policy {policy.name!r} has no critical latency objective "
                             "to rank settings by; name one with latency_objective")  # fmt: skip
    target = found.target.max if isinstance(found.target, Band) else found.target
    return LatencyAxis(found.name, found.metric, found.stat, "s", target)


def pareto(points: Mapping[int, tuple[float, float]]) -> list[int]:
    """The trials no other beats on both throughput (higher) and latency (lower)."""
    front = []
    for n, (tp, lat) in points.items():
        dominated = any(
            t2 >= tp and l2 <= lat and (t2 > tp or l2 < lat)
            for m, (t2, l2) in points.items()
            if m != n
        )
        if not dominated:
            front.append(n)
    return sorted(front)


def trial_row(trial: FrozenTrial) -> dict[str, Any]:
    """One setting's line of study.json."""
    attrs = trial.user_attrs
    row: dict[str, Any] = {"number": trial.number, "params": dict(trial.params),
                           "status": attrs.get("status", "interrupted")}  # fmt: skip
    for name in ROW_ATTRS:
        row[name] = attrs.get(name)
    row["notes"] = list(attrs.get("notes") or [])
    row["log_tail"] = list(attrs.get("log_tail") or [])
    return row


def study_document(
    study: Study,
    scenario: str,
    policy: str,
    axis: LatencyAxis,
    trials: Sequence[FrozenTrial],
    fixed: Mapping[str, Any],
    describe: Callable[[dict[str, Any]], dict[str, Any]],
    complete: bool,
) -> dict[str, Any]:
    """study.json: every setting, the front, and the best passing setting ready to deploy."""
    rows = [trial_row(t) for t in trials]
    measured = {r["number"]: (float(r["throughput"]), float(r["latency"]))
                for r in rows if r["status"] == "measured"}  # fmt: skip
    front = pareto(measured)
    for r in rows:
        r["pareto"] = r["number"] in front
    passing = [r for r in rows if r["status"] == "measured" and r["verdict"] == "PASS"]
    best: dict[str, Any] | None = None
    if passing:
        most = max(r["throughput"] for r in passing)
        near = [r for r in passing if r["throughput"] >= most * (1 - SAME_THROUGHPUT)]
        top = min(near, key=lambda r: (r["latency"], -r["throughput"]))
        setting = {**fixed, **top["params"]}
        best = {"number": top["number"], "params": top["params"], "setting": setting,
                **describe(setting)}  # fmt: skip
    return {
        "schema": STUDY_SCHEMA,
        "study": study.name,
        "scenario": scenario,
        "policy": policy,
        "launcher": study.launcher.type,
        "measure": study.measure,
        "sampler": study.sampler_name,
        "size": study.size,
        "complete": complete,
        "fixed": dict(fixed),
        "throughput": {"metric": study.throughput, "unit": THROUGHPUT_UNITS[study.throughput]},
        "latency": axis.to_json(),
        "trials": rows,
        "pareto": front,
        "best": best,
        "best_reason": _best_reason(rows, best, axis),
    }


def _best_reason(rows: list[dict[str, Any]], best: dict[str, Any] | None, axis: LatencyAxis) -> str:
    measured = [r for r in rows if r["status"] == "measured"]
    if best is not None:
        n = len([r for r in measured if r["verdict"] == "PASS"])
        return (f"the highest throughput of the {n} setting(s) that pass the policy (of "
                f"{len(measured)} measured; within 1 % of it, the lowest latency)")  # fmt: skip
    if not measured:
        return "no setting could be measured"
    return f"none of the {len(measured)} measured setting(s) passes the policy ({axis.objective})"


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Measured settings by throughput (best first), then the ones that failed."""
    measured = [r for r in rows if r["status"] == "measured"]
    others = [r for r in rows if r["status"] != "measured"]
    measured.sort(key=lambda r: (-r["throughput"], r["latency"]))
    return measured + sorted(others, key=lambda r: r["number"])


def setting_text(params: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_value(v)}" for k, v in params.items())


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f"{v:g}" if isinstance(v, float) else str(v)


def fmt(value: Any, scale: float = 1.0, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{float(value) * scale:,.{digits}f}{unit}"


def table_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    """The study's table: rank, trial, setting, status, verdict, throughput, latencies."""
    out = []
    for rank, r in enumerate(ranked(list(doc["trials"])), start=1):
        measured = r["status"] == "measured"
        out.append([
            str(rank) if measured else "-",
            f"#{r['number']}" + (" *" if r.get("pareto") else ""),
            setting_text(r["params"]),
            r["status"].replace("_", " "),
            r["verdict"] or "-",
            fmt(r["throughput"]),
            fmt(r["latency"], 1000, 0, " ms"),
            fmt(r["ttft_p99_s"], 1000, 0, " ms"),
            fmt(r["itl_p99_s"], 1000, 1, " ms"),
        ])  # fmt: skip
    return out


def table_header(doc: Mapping[str, Any]) -> list[str]:
    lat = doc["latency"]
    return ["rank", "trial", "setting", "status", "verdict",
            f"{doc['throughput']['metric']} ({doc['throughput']['unit']})",
            f"{lat['metric']} {lat['stat']}", "TTFT p99", "ITL p99"]  # fmt: skip


def study_markdown(doc: Mapping[str, Any]) -> str:
    """summary.md: the table, the front, the best setting with its command line and patch."""
    lat = doc["latency"]
    target = f" (target {lat['target'] * 1000:g} ms)" if lat.get("target") is not None else ""
    lines = [
        f"# Tuning study {doc['study']}",
        "",
        f"Scenario `{doc['scenario']}`, policy `{doc['policy']}`, launcher `{doc['launcher']}`, "
        f"measure `{doc['measure']}`, sampler `{doc['sampler']}`: "
        f"{len([t for t in doc['trials'] if t['status'] == 'measured'])} of {doc['size']} "
        f"settings measured{'' if doc['complete'] else ' so far'}. "
        f"Latency axis: {lat['objective']} ({lat['metric']} {lat['stat']}){target}. "
        "`*`: on the Pareto front. Interactive plots: [report.html](report.html).",
        "",
        "| " + " | ".join(table_header(doc)) + " |",
        "|" + "---|" * len(table_header(doc)),
    ]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
              for row in table_rows(doc)]  # fmt: skip
    failed = [t for t in doc["trials"] if t["status"] in ("launch_failed", "error")]
    for t in failed:
        lines += ["", f"Trial #{t['number']} ({setting_text(t['params'])}): "
                  f"{t['status'].replace('_', ' ')}: {t.get('reason') or ''}"]  # fmt: skip
        if t["log_tail"]:
            lines += ["", "```", *t["log_tail"][-10:], "```"]
    best = doc.get("best")
    lines += ["", "## Best setting", "", doc["best_reason"] + "."]
    if best:
        lines += [
            "",
            f"Trial #{best['number']}: {setting_text(best['params'])}.",
            "",
            "```sh",
            best["vllm_serve"],
            "```",
            "",
            "InferenceService merge patch (`kubectl patch isvc NAME --type merge -p ...`):",
            "",
            "```json",
            json.dumps(best["isvc_patch"], indent=2),
            "```",
        ]
    return "\n".join(lines) + "\n"
