"""`harness run` and `harness evaluate` as a chain of small steps, each testable alone.

load scenario -> load policy -> resolve target -> run load (records to disk as they come)
-> consolidate -> judge -> write reports. Each step raises a HarnessError with its exit code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from harness.collectors.collect import Collection, collection_manifest, finalize, plan_sources
from harness.errors import RunInterrupted, UsageError
from harness.policy import Policy, load_policy
from harness.recordlog import RecordLog, consolidate, read_table
from harness.records import RequestRecord
from harness.results import Manifest, new_run_dir, read_manifest
from harness.scenario import ClosedLoop, PoissonArrivals, Scenario, load_scenario, policy_path
from harness.target import ResolvedTarget, resolve, simulator
from harness.verdict import Verdict
from harness.workload import Workload, build_workload

if TYPE_CHECKING:
    from harness.loadgen import LoadOutcome


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What the user asked for on the command line."""

    scenario_file: Path
    overrides: tuple[str, ...] = ()
    target_url: str | None = None
    model: str | None = None
    policy_file: Path | None = None
    out: Path = Path("results")
    workers: int = 0  # 0: load from this process; N: N Locust workers
    master_bind: str | None = None  # HOST:PORT to wait for remote `harness worker`s on


@dataclass(frozen=True, slots=True)
class RunResult:
    run_dir: Path
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything read from files before any process starts: a bad file exits 2 here."""

    scenario: Scenario
    policy_file: Path
    policy: Policy
    workload: Workload


def load_inputs(req: RunRequest) -> Inputs:
    """Steps 1-2: the scenario (with --set overrides), its workload's datasets, and the
    policy it names (or --policy)."""
    scenario = load_scenario(req.scenario_file, list(req.overrides))
    workload = build_workload(scenario.workload, req.scenario_file.parent, str(req.scenario_file))
    pfile = req.policy_file or policy_path(req.scenario_file, scenario)
    return Inputs(scenario, pfile, load_policy(pfile), workload)


@contextlib.contextmanager
def target_for(req: RunRequest, scenario: Scenario) -> Iterator[ResolvedTarget]:
    """Step 3: the URL given (flag, then scenario) or a built-in simulator started for the run."""
    from harness.openai_api import endpoint_for

    url = req.target_url or scenario.target.url
    model = req.model or scenario.target.model
    timeout = scenario.target.connect_timeout_s
    if url is not None:
        url = url.rstrip("/")
        yield resolve(url, endpoint_for(scenario, url), model, timeout)
        return
    with simulator(scenario.target.sim) as sim_url:
        yield resolve(
            sim_url,
            endpoint_for(scenario, sim_url),
            model,
            timeout,
            kind="simulator",
            simulator=dict(scenario.target.sim),
        )


def execute(req: RunRequest, announce: Callable[[str], None] = lambda _: None) -> RunResult:
    """Run a scenario end to end and judge it; the run folder holds everything."""
    inputs = load_inputs(req)
    scenario, policy = inputs.scenario, inputs.policy
    with target_for(req, scenario) as target:
        run_dir, manifest = _open_run(req, scenario, inputs.policy_file, policy, target)
        announce(describe(scenario, target, run_dir))
        collection = Collection(
            scenario.collect, run_dir, plan_sources(scenario.collect, target.url)
        )
        collection.start()  # its first reading comes before any load
        log = RecordLog(run_dir)
        try:
            outcome, early_stop = _drive(req, inputs, target, log, announce)
        except BaseException as exc:
            log.close()
            collection.stop()
            finalize(collection, None)
            manifest.status = "aborted"
            manifest.records = log.count
            manifest.collect = collection_manifest(collection)
            manifest.write(run_dir)
            consolidate(run_dir)
            if isinstance(exc, KeyboardInterrupt):
                raise RunInterrupted(
                    f"run stopped; the {log.count} records measured so far are in {run_dir}"
                ) from None
            raise
        log.close()
        collection.stop()  # the last reading, after the drain
        finalize(collection, outcome.timeline)  # Prometheus is read while the target is up
        manifest.collect = collection_manifest(collection)
    manifest.status = "complete"
    manifest.timeline = outcome.timeline
    manifest.records = log.count
    manifest.load = {
        "generators": outcome.generators,
        "sent": outcome.sent,
        "cut_at_drain": outcome.cut_at_drain,
    }
    if early_stop is not None:
        manifest.load["early_stop"] = early_stop
        if early_stop["stopped"]:
            manifest.notes.append(f"stopped early: {early_stop['stopped']}")

    if outcome.sent != log.count:
        manifest.notes.append(f"{outcome.sent} requests sent but {log.count} records written")
    if outcome.cut_at_drain:
        manifest.notes.append(
            f"{outcome.cut_at_drain} request(s) still running at the end of the drain "
            f"timeout ({scenario.load.drain_timeout_s:g} s) were cut and count as errors"
        )
    consolidate(run_dir)
    manifest.write(run_dir)
    verdict = judge_run(run_dir, policy)
    return RunResult(run_dir=run_dir, verdict=verdict)


def explore(
    req: RunRequest, host: str, port: int, announce: Callable[[str], None]
) -> tuple[Path, int]:
    """`harness ui`: the Locust web UI on the scenario's target; records kept in a run folder."""
    inputs = load_inputs(req)
    with target_for(req, inputs.scenario) as target:
        run_dir, manifest = _open_run(
            req, inputs.scenario, inputs.policy_file, inputs.policy, target
        )
        manifest.notes.append("exploratory run from the Locust web UI: load set by hand")
        log = RecordLog(run_dir)
        from harness.ui import serve_ui  # imports locust: gevent patches here

        try:
            serve_ui(inputs.scenario, inputs.workload, target.url, target.model, log, host,
                     port, announce)  # fmt: skip
        finally:
            log.close()
            manifest.status = "aborted"  # no timeline: `evaluate` judges it from the records
            manifest.records = log.count
            manifest.write(run_dir)
            consolidate(run_dir)
    return run_dir, log.count


def describe(scenario: Scenario, target: ResolvedTarget, run_dir: Path) -> str:
    """One line saying what is about to happen, for the terminal."""
    load = scenario.load
    arrival = load.arrival
    if isinstance(arrival, ClosedLoop):
        shape = f"{arrival.users} concurrent users"
    else:
        kind = "Poisson" if isinstance(arrival, PoissonArrivals) else "gamma"
        shape = f"{kind} {arrival.rate:g} req/s (cap {arrival.max_concurrency})"
    if load.stages is not None:
        shape = f"{len(load.stages)} stages of {arrival.type} load"
    edges = [f"{v:g} s {k}" for k, v in (("warm-up", load.warmup_s), ("cool-down", load.cooldown_s))
             if v]  # fmt: skip
    extra = f" (+{', '.join(edges)})" if edges else ""
    where = "built-in simulator" if target.kind == "simulator" else target.url
    return (
        f"{scenario.name}: {shape}, {load.measured_s:g} s measured{extra} -> {where} "
        f"(model {target.model}); records in {run_dir}"
    )


def _open_run(
    req: RunRequest, scenario: Scenario, pfile: Path, policy: Policy, target: ResolvedTarget
) -> tuple[Path, Manifest]:
    _, run_dir = new_run_dir(req.out, scenario.name)
    manifest = Manifest(
        run_id=run_dir.name,
        scenario_file=str(req.scenario_file),
        scenario=scenario.model_dump(mode="json", by_alias=True),
        policy_file=str(pfile),
        policy=policy.model_dump(mode="json", by_alias=True),
        target=target.manifest(),
    )
    manifest.write(run_dir)
    return run_dir, manifest


def _drive(
    req: RunRequest,
    inputs: Inputs,
    target: ResolvedTarget,
    log: RecordLog,
    announce: Callable[[str], None],
) -> tuple[LoadOutcome, dict[str, Any] | None]:
    """The load phase; with load.early_stop (single process), also the looks' record."""
    # Imports locust, which patches the standard library with gevent: only now.
    from harness.early import EarlyJudge
    from harness.loadgen import LoadPlan, run_load
    from harness.openai_api import endpoint_for

    scenario = inputs.scenario
    if req.workers or req.master_bind:
        from harness.distributed import run_master

        host, port = host_port(req.master_bind) if req.master_bind else ("127.0.0.1", 0)
        judge = EarlyJudge(inputs.policy, scenario.load) if scenario.load.early_stop else None

        def gathered(record: RequestRecord) -> None:
            log.write(record)
            if judge is not None:
                judge.observe(record)

        outcome = run_master(
            scenario, inputs.workload, req.scenario_file.parent.resolve(), target.url,
            target.model, gathered, workers=max(req.workers, 1), bind_host=host,
            bind_port=port, spawn_local=req.master_bind is None, announce=announce,
            decide_early=judge,
        )  # fmt: skip
        if judge is None:
            return outcome, None
        if outcome.stopped_early:
            announce(f"stopped early: {outcome.stopped_early}")
        return outcome, judge.manifest(outcome.stopped_early)
    plan = LoadPlan(
        scenario=scenario,
        endpoint=endpoint_for(scenario, target.url),
        model=target.model,
        workload=inputs.workload,
    )
    from harness.progress import LiveStats, ProgressLine

    stats = LiveStats()
    early = EarlyJudge(inputs.policy, scenario.load) if scenario.load.early_stop else None

    def sink(record: RequestRecord) -> None:
        log.write(record)
        stats.observe(record)
        if early is not None:
            early.observe(record)

    line = ProgressLine(stats)
    line.start()
    try:
        outcome = run_load(plan, sink, on_send=stats.sent, decide_early=early)
    finally:
        line.stop()
    if early is None:
        return outcome, None
    if outcome.stopped_early:
        announce(f"stopped early: {outcome.stopped_early}")
    return outcome, early.manifest(outcome.stopped_early)


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"expected HOST:PORT, got {text!r}")
    return host or "0.0.0.0", int(port)


def judge_run(run_dir: Path, policy: Policy, write: bool = True) -> Verdict:
    """Re-judge a stored run (also the last step of `run`); writes the reports."""
    from harness.analysis import analyse
    from harness.collected import (
        collected_summary,
        load_collected,
        share_bounds,
        with_collected,
    )
    from harness.crosscheck import crosscheck
    from harness.judge import evaluate
    from harness.report.files import write_reports
    from harness.steady import steady_state, window_metrics

    manifest = read_manifest(run_dir)
    table = read_table(run_dir)
    early = manifest.load.get("early_stop")
    if isinstance(early, dict) and "confidence_per_look" in early:
        # Judged at the confidence each look had, or the looks would have spent it twice.
        policy = policy.model_copy(update={"confidence": float(early["confidence_per_look"])})
    start, end = measure_window(manifest, table)
    metrics = analyse(table, start, end, policy.goodput)
    collected = load_collected(run_dir, manifest)
    checks = crosscheck(table, collected) if collected is not None else []
    checks.append(steady_state(table, start, end, policy.confidence))
    windows = {
        length: window_metrics(table, start, end, length, policy.goodput)
        for length in {o.window for o in policy.objectives if o.window is not None}
    }
    verdict = evaluate(
        policy,
        with_collected(metrics, collected),
        invalid_reason=saturation(manifest),
        checks=checks,
        collected=collected_summary(collected, share_bounds(policy.objectives)),
        windows=windows,
    )
    if write:
        write_reports(run_dir, verdict)
    return verdict


def saturation(manifest: Manifest) -> str | None:
    """Why the load generators could not be trusted, from their guard reports, or None.

    Judged again from the manifest each time, so `harness evaluate` reaches the same INVALID.
    """
    from harness.guard import GuardReport, assess

    generators = manifest.load.get("generators")
    if not isinstance(generators, dict):
        return None
    reasons: list[str] = []
    for name, data in sorted(generators.items()):
        found = assess(GuardReport.from_dict(data), data.get("dispatch_lag_p99_s"))
        prefix = "" if len(generators) == 1 else f"{name}: "
        reasons += [prefix + reason for reason in found]
    return "; ".join(reasons) or None


def measure_window(manifest: Manifest, table: pa.Table) -> tuple[float, float]:
    """The measured window (monotonic seconds): the timeline's, or, for a run killed before
    it wrote one, what its records span."""
    if manifest.timeline is None:
        return _window_from_records(table)
    return manifest.timeline.measure_start, manifest.timeline.measure_end


def _window_from_records(table: pa.Table) -> tuple[float, float]:
    """The measured window of a run that never wrote its timeline: first send to last answer."""
    measured = table.filter(pc.equal(table["phase"], "measure"))
    if measured.num_rows == 0:
        return 0.0, 0.0  # nothing measured: every objective will be INCONCLUSIVE
    start = pc.min(measured["t_sent"]).as_py()
    end = pc.max(measured["t_done"]).as_py()
    return float(start), float(end)
