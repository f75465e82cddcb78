"""`harness run`: a scenario end to end, as a chain of small steps each testable alone.

load scenario and policy -> resolve the target -> start the collectors -> drive the load
(records to disk as they come) -> consolidate -> judge (``flows.evaluate.judge_run``) ->
write reports. Each step raises a HarnessError with its exit code.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

import harness.load  # noqa: F401  (first: gevent patches the standard library here)
from harness.collectors.session import (
    CollectorSession,
    finalize,
    plan_sources,
    session_manifest,
)
from harness.errors import ExitCode, RunInterrupted, UsageError, note_run_dir
from harness.load.distributed import host_port, run_master
from harness.load.driver import LoadOutcome, LoadPlan, run_load
from harness.load.openai_api import endpoint_for
from harness.load.progress import LiveStats, ProgressLine
from harness.load.target import ResolvedTarget, auth_only, preflight, resolve, simulator
from harness.records.log import RecordLog, consolidate
from harness.records.record import RequestRecord
from harness.records.run_dir import Manifest, new_run_dir
from harness.spec.load import ClosedLoop, PoissonArrivals
from harness.spec.policy import Policy, load_policy
from harness.spec.scenario import Scenario, check_base_url, load_scenario, policy_path
from harness.workload.base import Workload
from harness.workload.build import build_workload, use_tokens
from harness.workload.tokens import (
    TARGET as TOKENIZE_ON_TARGET,
)
from harness.workload.tokens import (
    Counter,
    TokenTable,
    learn_table,
    local_counter,
    server_counter,
    with_overhead,
)

if TYPE_CHECKING:
    from harness.judge.early import EarlyJudge
    from harness.judge.verdict import Verdict

# The judge, the early looks and the reports (with scipy, pandas and plotly under them) are
# imported inside the functions that use them, after the load: `harness run` reaches its first
# request in well under a CPU-second (tests/unit/test_layout.py allows exactly these imports).


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
    report: bool = True  # write report.html (the HTML report) beside the verdict


@dataclass(frozen=True, slots=True)
class RunResult:
    run_dir: Path
    verdict: Verdict
    interrupted: str | None = None  # the signal that stopped the load early


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything read from files before any process starts: a bad file exits 2 here."""

    scenario: Scenario
    policy_file: Path
    policy: Policy
    workload: Workload
    counter: tuple[Counter, str] | None = None  # a local tokenizer and where it came from


def load_inputs(req: RunRequest) -> Inputs:
    """Steps 1-2: the scenario (with --set overrides), its workload's datasets, a local
    tokenizer, and the policy it names (or --policy)."""
    scenario = load_scenario(req.scenario_file, list(req.overrides))
    workload = build_workload(scenario.workload, req.scenario_file.parent, str(req.scenario_file))
    tokenizer = scenario.workload.tokenizer
    counter = None
    if tokenizer is not None and tokenizer != TOKENIZE_ON_TARGET:
        counter = local_counter(tokenizer, req.scenario_file.parent, str(req.scenario_file))
    pfile = req.policy_file or policy_path(req.scenario_file, scenario)
    return Inputs(scenario, pfile, load_policy(pfile), workload, counter)


def plan_tokens(inputs: Inputs, target: ResolvedTarget) -> TokenTable | None:
    """With workload.tokenizer: which words are one token, and what the server adds to every
    prompt (the usage of one request of a probe prompt, less its words); the workload plans
    lengths with them."""
    scenario = inputs.scenario
    if scenario.workload.tokenizer is None:
        return None
    if inputs.counter is not None:
        count, source = inputs.counter
    else:
        headers = auth_only(endpoint_for(scenario, target.url).headers)
        count = server_counter(target.url, target.model, headers, scenario.target.read_timeout_s)
        source = "the target's /tokenize"
    table = learn_table(count, source, local=inputs.counter is not None)
    probe = table.probe()
    t = scenario.target
    answer = preflight(target.url, endpoint_for(scenario, target.url), target.model, t.api,
                       t.read_timeout_s, text=probe)  # fmt: skip
    served = answer.get("prompt_tokens")
    table = with_overhead(table, served if isinstance(served, int) else None, probe)
    use_tokens(inputs.workload, table)
    return table


@contextlib.contextmanager
def target_for(req: RunRequest, scenario: Scenario) -> Iterator[ResolvedTarget]:
    """Step 3: the URL given (flag, then scenario) or a built-in simulator started for the run."""
    url = scenario.target.url
    if req.target_url is not None:
        try:
            url = check_base_url(req.target_url)
        except ValueError as exc:
            raise UsageError(f"--target {req.target_url}: {exc}") from None
    model = req.model or scenario.target.model
    t = scenario.target
    if url is not None:  # both checked without their trailing slash
        yield resolve(url, endpoint_for(scenario, url), model, t.connect_timeout_s, t.api,
                      t.read_timeout_s)  # fmt: skip
        return
    with simulator(scenario.target.sim) as sim_url:
        yield resolve(sim_url, endpoint_for(scenario, sim_url), model, t.connect_timeout_s, t.api,
                      t.read_timeout_s, kind="simulator", simulator=dict(t.sim))  # fmt: skip


def run_and_report(req: RunRequest, console: Console, announce: Callable[[str], None]) -> ExitCode:
    """The command: run, print the verdict table, write the HTML report (a failure to is a
    warning, never another exit code), and give the exit code."""
    result = execute(req, announce)
    from harness.judge.classify import exit_code
    from harness.report.files import SUMMARY_FILE
    from harness.report.html import write_report_quietly
    from harness.report.table import print_verdict

    print_verdict(result.verdict, console)
    console.print(f"results: {result.run_dir}", soft_wrap=True)
    if req.report:
        html = write_report_quietly(result.run_dir, announce, [result.run_dir / SUMMARY_FILE])
        if html is not None:
            console.print(f"report: {html}", soft_wrap=True)
    if result.interrupted is not None:
        # The verdict on what was measured is in the folder; the exit code says it was cut.
        return ExitCode.INTERRUPTED
    return exit_code(result.verdict.decision)


def execute(req: RunRequest, announce: Callable[[str], None] = lambda _: None) -> RunResult:
    """Run a scenario end to end and judge it; the run folder holds everything."""
    inputs = load_inputs(req)
    scenario, policy = inputs.scenario, inputs.policy
    with target_for(req, scenario) as target:
        tokens = plan_tokens(inputs, target)
        run_dir, manifest = open_run(req, scenario, inputs.policy_file, policy, target)
        announce(describe(scenario, target, run_dir))
        for note in target.notes:
            announce(f"note: {note}")
        if tokens is not None:
            said = (
                f"prompt lengths in the model's tokens ({tokens.source}): "
                f"{len(tokens.words)} words are one token each; the server adds "
                f"{tokens.overhead} tokens to every prompt"
            )
            manifest.notes.append(said)
            announce(f"note: {said}")
        collection = CollectorSession(
            scenario.collect,
            run_dir,
            plan_sources(scenario.collect, target.url, scenario.target.api_key_env),
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
            manifest.collect = session_manifest(collection)
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
        manifest.collect = session_manifest(collection)
    manifest.status = "complete" if outcome.interrupted is None else "interrupted"
    manifest.timeline = outcome.timeline
    manifest.records = log.count
    manifest.load = {
        "generators": outcome.generators,
        "sent": outcome.sent,
        "cut_at_drain": outcome.cut_at_drain,
    }
    if tokens is not None:
        manifest.load["tokenizer"] = tokens.to_json()
    if outcome.interrupted is not None:
        tl = outcome.timeline
        when = outcome.interrupted_at if outcome.interrupted_at is not None else tl.wall_end
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        manifest.load["interrupted"] = {
            "signal": outcome.interrupted,
            "at": at,
            "measured_s": tl.measure_end - tl.measure_start,
            "planned_measured_s": scenario.load.measured_s,
        }
        manifest.notes.append(f"interrupted by {outcome.interrupted} at {at}")
    if early_stop is not None:
        manifest.load["early_stop"] = early_stop
        if early_stop["stopped"]:
            manifest.notes.append(f"stopped early: {early_stop['stopped']}")

    if outcome.sent != log.count:
        manifest.notes.append(f"{outcome.sent} requests sent but {log.count} records written")
    if outcome.cut_at_drain:
        manifest.notes.append(
            f"{outcome.cut_at_drain} request(s) not done at the end of the drain timeout "
            f"({scenario.load.drain_timeout_s:g} s) were cut: those in flight are recorded as "
            "errors, arrivals still queued behind max_concurrency were never sent"
        )
    consolidate(run_dir)
    manifest.write(run_dir)
    from harness.flows.evaluate import judge_run

    verdict = judge_run(run_dir, policy)
    return RunResult(run_dir=run_dir, verdict=verdict, interrupted=outcome.interrupted)


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


def open_run(
    req: RunRequest, scenario: Scenario, pfile: Path, policy: Policy, target: ResolvedTarget
) -> tuple[Path, Manifest]:
    _, run_dir = new_run_dir(req.out, scenario.name)
    note_run_dir(run_dir)
    manifest = Manifest(
        run_id=run_dir.name,
        scenario_file=str(req.scenario_file),
        scenario=scenario.model_dump(mode="json", by_alias=True),
        policy_file=str(pfile),
        policy=policy.model_dump(mode="json", by_alias=True),
        target=target.manifest(),
        notes=list(target.notes),
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
    scenario = inputs.scenario
    if req.workers or req.master_bind:
        host, port = host_port(req.master_bind) if req.master_bind else ("127.0.0.1", 0)
        judge = _early_judge(inputs)

        def gathered(record: RequestRecord) -> None:
            log.write(record)
            if judge is not None:
                judge.observe(record)

        outcome = run_master(
            scenario, inputs.workload, req.scenario_file.parent.resolve(), target.url,
            target.model, gathered, workers=max(req.workers, 1), bind_host=host,
            bind_port=port, spawn_local=req.master_bind is None, announce=announce,
            decide_early=judge, run_id=log.path.parent.name,
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
        run_id=log.path.parent.name,
    )
    stats = LiveStats()
    early = _early_judge(inputs)

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


def _early_judge(inputs: Inputs) -> EarlyJudge | None:
    """With load.early_stop, the judge that looks at the records as they come; its statistics
    are imported only then, so a run without early stop starts its load without them."""
    scenario = inputs.scenario
    if scenario.load.early_stop is None:
        return None
    from harness.judge.early import EarlyJudge

    return EarlyJudge(inputs.policy, scenario.load, scenario.target.expect_backend)
