"""`harness capacity SCENARIO`: the highest load (request rate, or users for a closed-loop
scenario) at which every critical objective still passes.

Each probe is a normal `harness run` of the scenario at one load level, in a run folder of its
own (re-judgeable with `harness evaluate`). A probe the judge cannot decide is run again for as
long as the judge's own sample-size estimate says would decide (at most twice), and is never
counted as a pass. The search brackets the capacity, then closes the bracket by interpolation
(harness.capacity.search) until it is within the tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness.capacity.document import CapacityReport, summary_markdown
from harness.capacity.plan import cost_per_1k_tokens, energy_per_1k_tokens, fleet_plan
from harness.capacity.probe import ProbeResult, read_probe
from harness.capacity.search import Search
from harness.errors import ExitCode, RunInterrupted, UsageError
from harness.flows.step_runs import StepRunner, read_verdict, seconds_to_decide
from harness.records.run_dir import new_run_dir
from harness.report.files import SUMMARY_FILE, write_atomic
from harness.report.html import write_report_quietly
from harness.spec.scenario import Scenario

#: Extensions of an undecided probe, and how much longer each may be at most.
MAX_EXTENSIONS = 2
MAX_STRETCH = 4.0
OUTCOME_EXIT = {
    "FOUND": ExitCode.PASS,
    "ABOVE": ExitCode.INCONCLUSIVE,
    "UNDECIDED": ExitCode.INCONCLUSIVE,
    "NONE": ExitCode.FAIL,
    "INVALID": ExitCode.INVALID,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CapacityRequest:
    scenario_file: Path
    target_url: str | None = None
    policy_file: Path | None = None
    out: Path = Path("results")
    overrides: tuple[str, ...] = ()
    tolerance: float = 0.05
    max_probes: int = 12
    ceiling: float | None = None  # highest level worth probing
    peak_rps: float | None = None
    trough_rps: float | None = None
    headroom: float = 0.2
    gpu_hour_price: float | None = None
    gpus_per_replica: int = 1
    report: bool = True  # report.html (a tuning study's per-setting searches go without)


def capacity_and_report(
    req: CapacityRequest, console: Console, announce: Callable[[str], None]
) -> ExitCode:
    """The command: the search, capacity.json, summary.md and the HTML report, and the
    outcome's exit code."""
    scenario, runner = StepRunner.for_scenario(req.scenario_file, req.policy_file, req.overrides)
    policy = runner.policy
    integer, start = _level(scenario)
    _, folder = new_run_dir(req.out, f"capacity-{scenario.name}")
    search = Search(start=start, integer=integer, tolerance=req.tolerance,
                    floor=1.0 if integer else start / 64,
                    ceiling=req.ceiling or (100_000.0 if integer else 1e6))  # fmt: skip
    probes = _Probes(req, scenario, runner, folder, announce)
    report = CapacityReport(scenario=scenario.name, policy=policy.name,
                            unit="users" if integer else "req/s", tolerance=req.tolerance,
                            outcome="UNDECIDED", reason="")  # fmt: skip
    try:
        _search(search, probes, report, req.max_probes, announce)
    except KeyboardInterrupt:
        probes.runner.stop()
        _finish(report, search, req, "UNDECIDED", "interrupted: the probes so far are kept")
        _write(folder, report)
        raise RunInterrupted(f"interrupted; probes so far in {folder}") from None
    _write(folder, report)
    console.print(f"capacity: {report.outcome}: {report.reason}", soft_wrap=True)
    console.print(f"results: {folder}", soft_wrap=True)
    html = write_report_quietly(folder, announce, [folder / SUMMARY_FILE]) if req.report else None
    if html is not None:
        console.print(f"report: {html}", soft_wrap=True)
    return OUTCOME_EXIT[report.outcome]


def _search(
    search: Search,
    probes: _Probes,
    report: CapacityReport,
    max_probes: int,
    announce: Callable[[str], None],
) -> None:
    while (level := search.next_level()) is not None:
        if len(report.probes) >= max_probes:
            _finish(report, search, probes.req, "UNDECIDED",
                    f"{max_probes} probes spent before the bracket closed")  # fmt: skip
            return
        result = probes.measure(level, report)
        if result.decision == "INVALID":
            _finish(report, search, probes.req, "INVALID",
                    f"the probe at {level:g} {report.unit} could not be trusted: "
                    f"{'; '.join(result.undecided) or 'see its run folder'}")  # fmt: skip
            return
        search.add(level, bool(result.passed), result.pressure)
        lo, hi = search.lo, search.hi
        bracket = f"[{_lv(lo)}, {_lv(hi)}]"
        announce(f"probe {len(report.probes)}: {level:g} {report.unit}: "
                 f"{'held' if result.passed else 'not held'} ({result.decision}, pressure "
                 f"{_pr(result.pressure)}); bracket {bracket}")  # fmt: skip
    _finish(report, search, probes.req, "", "")


def _finish(
    report: CapacityReport, search: Search, req: CapacityRequest, outcome: str, reason: str
) -> None:
    by_level = {p.level: p for p in report.probes}  # an extended probe: its last run
    lo, hi = search.lo, search.hi
    report.lo = by_level.get(lo.level) if lo else None
    report.hi = by_level.get(hi.level) if hi else None
    if not outcome:
        if report.lo is None:
            outcome, reason = "NONE", f"no load held: {_lv(hi)} {report.unit} already fails"
        elif report.hi is None:
            outcome = "ABOVE"
            reason = f"every load held up to {_lv(lo)} {report.unit}: raise --ceiling"
        else:
            outcome = "FOUND"
            reason = (f"{report.lo.level:g} {report.unit} held, {report.hi.level:g} not "
                      f"(within {report.tolerance:.0%})")  # fmt: skip
    report.outcome, report.reason = outcome, reason
    best = report.lo
    if best is None or not best.request_rate:
        return
    if req.peak_rps is not None:
        concurrency = best.level if report.unit == "users" else _in_flight(best)
        report.plan = fleet_plan(best.request_rate, concurrency, req.peak_rps, req.headroom,
                                 req.trough_rps)  # fmt: skip
    if req.gpu_hour_price is not None and best.output_token_rate:
        report.cost_per_1k_tokens = cost_per_1k_tokens(
            req.gpu_hour_price, req.gpus_per_replica, best.output_token_rate
        )
    if best.energy_j and best.output_token_rate and best.duration_s:
        report.energy_j_per_1k_tokens = energy_per_1k_tokens(
            best.energy_j, best.output_token_rate * best.duration_s
        )


class _Probes:
    """Runs one probe, extending it while the judge cannot decide."""

    def __init__(
        self,
        req: CapacityRequest,
        scenario: Scenario,
        runner: StepRunner,
        folder: Path,
        announce: Callable[[str], None],
    ) -> None:
        self.req, self.runner, self.folder, self.announce = req, runner, folder, announce
        self.policy = runner.policy
        self.key = "users" if scenario.load.arrival.type == "concurrency" else "rate"
        self.duration = scenario.load.measured_s

    def measure(self, level: float, report: CapacityReport) -> ProbeResult:
        value = int(level) if self.key == "users" else level
        duration = self.duration
        for extension in range(MAX_EXTENSIONS + 1):
            name = f"probe-{len(report.probes) + 1:02d}-{level:g}"
            extra = [f"load.arrival.{self.key}={value}", f"load.duration_s={duration:g}"]
            self.announce(f"probe {len(report.probes) + 1}: {level:g} {report.unit} for "
                          f"{duration:g} s")  # fmt: skip
            run_dir = self.runner.run({"probe": self.req.target_url}, self.folder / name,
                                      extra)["probe"]  # fmt: skip
            result = read_probe(level, run_dir, self.policy)
            report.probes.append(result)
            if result.passed is not None or result.decision == "INVALID":
                return result
            needed = seconds_to_decide(read_verdict(run_dir))
            if needed is None or extension == MAX_EXTENSIONS:
                break
            duration = min(max(needed[0], duration * 1.25), duration * MAX_STRETCH)
            self.duration = max(self.duration, duration)  # later probes start there
            self.announce(f"probe at {level:g} {report.unit} undecided: extended to "
                          f"{duration:g} s")  # fmt: skip
        return result  # still undecided: not a pass (the search counts it as not held)


def _level(scenario: Scenario) -> tuple[bool, float]:
    load = scenario.load
    if load.stages is not None:
        raise UsageError(
            f"{scenario.name}: load.stages: a capacity search probes one level at a time; "
            "remove the stages (the search sets the rate or the users)"
        )
    arrival = load.arrival
    if arrival.type == "concurrency":
        return True, float(arrival.users or 1)
    return False, float(arrival.rate)


def _in_flight(probe: ProbeResult) -> float | None:
    state = probe.server.get("server.requests_running")
    waiting = probe.server.get("server.queue_waiting", {}).get("mean", 0.0)
    return state["mean"] + waiting if state else None


def _write(folder: Path, report: CapacityReport) -> None:
    write_atomic(folder / "capacity.json", json.dumps(report.to_json(), indent=2) + "\n")
    write_atomic(folder / SUMMARY_FILE, summary_markdown(report))


def _lv(tried: object) -> str:
    level = getattr(tried, "level", None)
    return "—" if level is None else f"{level:g}"


def _pr(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"
