"""Distributed load on Locust's master/worker mode.

The master (`harness run --workers N`, or a master waiting for remote `harness worker`s)
sends each worker its part of the plan, starts one driver per worker, and receives every
raw record over Locust's message channel; it writes them to the run folder as they come.
Each worker sends its records in batches and, last, a `done` report with how many it
sent: the master checks that nothing was lost. The API key never travels: each worker
reads it from its own environment.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from locust.env import Environment

from harness.children import free_port
from harness.errors import ExitCode, HarnessError, UsageError
from harness.load.driver import (
    LoadOutcome,
    LoadPlan,
    OpenAIDriver,
    RunState,
    Sink,
    configure_driver,
    cut_in_flight,
    generator_report,
    stop_on_signals,
)
from harness.load.guard import LoadGuard, frozen_heap
from harness.load.openai_api import endpoint_for
from harness.records.record import RequestRecord
from harness.records.run_dir import Timeline
from harness.spec.scenario import Scenario
from harness.workload.base import Workload
from harness.workload.build import build_workload, tokens_of, use_tokens
from harness.workload.tokens import TARGET as TOKENIZE_ON_TARGET
from harness.workload.tokens import local_counter, table_from_wire, table_to_wire

MSG_PLAN = "harness_plan"
MSG_READY = "harness_ready"
MSG_RECORDS = "harness_records"
MSG_DONE = "harness_done"
MSG_STOP = "harness_stop"  # master -> workers: an early decision, stop sending
BATCH_ROWS = 200
BATCH_INTERVAL_S = 0.5
_TIME_FIELDS = ("t_intended", "t_sent", "t_first", "t_last", "t_done")


class DistributedError(HarnessError):
    """A worker failed, vanished or lost records: the run cannot be trusted (exit 4)."""

    exit_code = ExitCode.INVALID


# ----------------------------------------------------------------------------- master


@dataclass(slots=True)
class _Collected:
    received: dict[int, int] = field(default_factory=dict)  # worker index -> records
    done: dict[int, dict[str, Any]] = field(default_factory=dict)
    ready: set[int] = field(default_factory=set)
    plan_errors: list[str] = field(default_factory=list)
    all_done: Event = field(default_factory=Event)
    all_ready: Event = field(default_factory=Event)
    stopped_early: str | None = None


def run_master(
    scenario: Scenario,
    workload: Workload,
    scenario_dir: Path,
    url: str,
    model: str,
    sink: Sink,
    workers: int,
    bind_host: str = "127.0.0.1",
    bind_port: int = 0,
    spawn_local: bool = True,
    announce: Callable[[str], None] = lambda _: None,
    connect_timeout_s: float = 60.0,
    decide_early: Callable[[float], str | None] | None = None,
    run_id: str = "",
) -> LoadOutcome:
    """Run the scenario on `workers` worker processes and gather every record through sink.

    With ``load.early_stop``, the master judges the records it has gathered at each look
    (``decide_early``) and tells every worker to stop sending once it decides."""
    port = bind_port or free_port()
    state = RunState(sink=sink)  # only for the signal handler's `finished`
    plan = LoadPlan(scenario=scenario, endpoint=endpoint_for(scenario, url), model=model,
                    workload=workload, run_id=run_id)  # fmt: skip
    env = Environment(user_classes=[configure_driver(plan, state)])
    runner = env.create_master_runner(master_bind_host=bind_host, master_bind_port=port)
    got = _Collected()

    got_index: dict[str, int] = {}  # Locust node id -> worker index, set when plans go out

    def index_of(node_id: str) -> int:
        return got_index[node_id]

    def on_ready(environment: Any, msg: Any, **_: Any) -> None:
        if msg.data.get("error"):
            got.plan_errors.append(f"worker {index_of(msg.node_id)}: {msg.data['error']}")
        got.ready.add(index_of(msg.node_id))
        if len(got.ready) == workers:
            got.all_ready.set()

    def on_records(environment: Any, msg: Any, **_: Any) -> None:
        i = index_of(msg.node_id)
        for row in msg.data["rows"]:
            sink(RequestRecord.from_row(row))
        got.received[i] = got.received.get(i, 0) + len(msg.data["rows"])

    def on_done(environment: Any, msg: Any, **_: Any) -> None:
        got.done[index_of(msg.node_id)] = msg.data
        if len(got.done) == workers:
            got.all_done.set()

    for name, handler in ((MSG_READY, on_ready), (MSG_RECORDS, on_records), (MSG_DONE, on_done)):
        runner.register_message(name, handler)

    procs: list[subprocess.Popen[bytes]] = []
    looker: gevent.Greenlet | None = None
    if spawn_local:
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "harness",
                        "worker",
                        "--master",
                        f"127.0.0.1:{port}",
                    ],
                    stdin=subprocess.DEVNULL,
                )
            )
    else:
        announce(f"waiting for {workers} worker(s): harness worker --master HOST:{port}")
    stop_signal: list[int] = []
    stop_on_signals(state, stop_signal)
    tokens = tokens_of(workload)  # workers plan prompt lengths with the master's table
    try:
        _await(lambda: len(runner.clients.ready) >= workers, connect_timeout_s,
               f"{workers} worker(s) did not connect within {connect_timeout_s:g} s")  # fmt: skip
        node_ids = sorted(c.id for c in runner.clients.ready)[:workers]
        for i, node_id in enumerate(node_ids):
            got_index[node_id] = i
            runner.send_message(
                MSG_PLAN,
                {
                    "scenario": scenario.model_dump(mode="json", by_alias=True),
                    # Dataset paths resolve here: remote workers need the files at this path.
                    "scenario_dir": str(scenario_dir),
                    "url": url,
                    "model": model,
                    "worker_index": i,
                    "worker_count": workers,
                    "run_id": run_id,
                    "master_host": socket.gethostname(),
                    "master_time": time.monotonic(),
                    "tokens": table_to_wire(tokens) if tokens is not None else None,
                },
                client_id=node_id,
            )
        if not got.all_ready.wait(timeout=connect_timeout_s):
            raise DistributedError("workers did not acknowledge their plans")
        if got.plan_errors:
            raise DistributedError("; ".join(got.plan_errors))
        runner.start(workers, spawn_rate=workers)
        looker = None
        early = scenario.load.early_stop
        if early is not None and decide_early is not None:
            # The workers start on the plan's arrival; the master's clock is theirs (offsets
            # applied to every record), so its measured window opens a warm-up from now.
            measure_start = time.monotonic() + scenario.load.warmup_s
            first = measure_start + early.min_s
            looker = gevent.spawn(
                _look_for_workers, runner, got, early.every_s, first, measure_start, decide_early
            )
        budget = scenario.load.total_s + scenario.load.drain_timeout_s + 120.0
        gevent.wait([got.all_done, state.finished], timeout=budget, count=1)
        if stop_signal:
            raise KeyboardInterrupt(f"stopped by {state.interrupted}")
        if not got.all_done.is_set():
            missing = sorted(set(range(workers)) - set(got.done))
            raise DistributedError(f"worker(s) {missing} did not finish within {budget:.0f} s")
    finally:
        if looker is not None:
            looker.kill(block=False)
        runner.quit()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return _merge(got, workers)


def _merge(got: _Collected, workers: int) -> LoadOutcome:
    failures = [f"worker {i}: {d['error']}" for i, d in sorted(got.done.items()) if d.get("error")]
    if failures:
        raise DistributedError("; ".join(failures))
    for i in range(workers):
        sent = int(got.done[i]["recorded"])
        received = got.received.get(i, 0)
        if sent != received:
            raise DistributedError(f"worker {i} sent {sent} records but {received} arrived")
    timelines = [Timeline(**got.done[i]["timeline"]) for i in range(workers)]
    merged = Timeline(
        wall_start=min(t.wall_start for t in timelines),
        t_start=min(t.t_start for t in timelines),
        measure_start=min(t.measure_start for t in timelines),
        measure_end=max(t.measure_end for t in timelines),
        t_end=max(t.t_end for t in timelines),
        wall_end=max(t.wall_end for t in timelines),
    )
    return LoadOutcome(
        timeline=merged,
        sent=sum(int(got.done[i]["sent"]) for i in range(workers)),
        cut_at_drain=sum(int(got.done[i]["cut_at_drain"]) for i in range(workers)),
        generators={f"w{i}": dict(got.done[i]["generator"]) for i in range(workers)},
        stopped_early=got.stopped_early,
    )


def _look_for_workers(
    runner: Any,
    got: _Collected,
    every_s: float,
    first_at: float,
    measure_start: float,
    decide: Callable[[float], str | None],
) -> None:
    """The master's early-stop looks; a decision goes to every worker as MSG_STOP."""
    next_at = first_at
    while not got.all_done.is_set():
        gevent.sleep(max(0.0, next_at - time.monotonic()))
        next_at += every_s
        reason = gevent.get_hub().threadpool.apply(decide, (measure_start,))
        if reason is not None:
            got.stopped_early = reason
            runner.send_message(MSG_STOP, {"reason": reason})
            return


def _await(ok: Callable[[], bool], timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise DistributedError(message)
        gevent.sleep(0.05)


# ----------------------------------------------------------------------------- worker


class _Batcher:
    """Buffers a worker's records and ships them to the master in batches."""

    def __init__(self, runner: Any, offset: float) -> None:
        self.runner = runner
        self.offset = offset  # added to every monotonic time: master's clock
        self.rows: list[dict[str, Any]] = []
        self.recorded = 0
        self._flusher = gevent.spawn(self._tick)

    def __call__(self, record: RequestRecord) -> None:
        row = record.to_row()
        if self.offset:
            for key in _TIME_FIELDS:
                if row[key] is not None:
                    row[key] += self.offset
            row["chunk_times"] = [t + self.offset for t in row["chunk_times"]]
        self.rows.append(row)
        self.recorded += 1
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def _tick(self) -> None:
        while True:
            gevent.sleep(BATCH_INTERVAL_S)
            self.flush()

    def flush(self) -> None:
        if self.rows:
            rows, self.rows = self.rows, []
            self.runner.send_message(MSG_RECORDS, {"rows": rows})

    def close(self) -> None:
        self._flusher.kill(block=True)
        self.flush()


def run_worker(master_host: str, master_port: int, timeout_s: float = 7 * 86_400.0) -> None:
    """Join a master, run the part of the plan it sends, ship every record, report, exit."""
    state_box: dict[str, Any] = {}
    env = Environment(user_classes=[OpenAIDriver])
    runner = env.create_worker_runner(master_host, master_port)

    def on_plan(environment: Any, msg: Any, **_: Any) -> None:
        try:
            _take_plan(msg.data)
        except Exception as exc:  # e.g. a dataset file missing on this machine
            runner.send_message(MSG_READY, {"error": f"{type(exc).__name__}: {exc}"})
            return
        runner.send_message(MSG_READY, {})

    def _take_plan(data: dict[str, Any]) -> None:
        same_host = data["master_host"] == socket.gethostname()
        # One machine shares CLOCK_MONOTONIC; across machines, line up on the plan's arrival.
        offset = 0.0 if same_host else float(data["master_time"]) - time.monotonic()
        scenario = Scenario.model_validate(data["scenario"])
        workload = build_workload(scenario.workload, Path(data["scenario_dir"]))
        if data.get("tokens"):
            spec, base = scenario.workload.tokenizer, Path(data["scenario_dir"])
            local = spec is not None and spec != TOKENIZE_ON_TARGET
            count = local_counter(spec, base, str(base))[0] if local and spec else None
            use_tokens(workload, table_from_wire(data["tokens"], count))
        plan = LoadPlan(
            scenario=scenario,
            endpoint=endpoint_for(scenario, data["url"]),
            model=data["model"],
            workload=workload,
            worker=f"w{data['worker_index']}",
            worker_index=int(data["worker_index"]),
            worker_count=int(data["worker_count"]),
            run_id=str(data.get("run_id") or ""),
        )
        batcher = _Batcher(runner, offset)
        state = RunState(sink=batcher)
        configure_driver(plan, state)
        guard = LoadGuard()
        guard.start()
        state_box.update(state=state, batcher=batcher, offset=offset)
        gevent.spawn(_report_when_done, runner, state, batcher, offset, guard)

    def on_stop(environment: Any, msg: Any, **_: Any) -> None:
        state = state_box.get("state")
        if state is not None:
            state.stopped_early = str(msg.data.get("reason"))
            state.stop_sending.set()

    runner.register_message(MSG_PLAN, on_plan)
    runner.register_message(MSG_STOP, on_stop)
    try:
        runner.greenlet.join(timeout=timeout_s)
    finally:
        state = state_box.get("state")
        if state is not None:
            # Still in flight when the master quit: the run was stopped, not failed.
            state.interrupted = state.interrupted or "the master"
            cut_in_flight(state)


def _report_when_done(
    runner: Any, state: RunState, batcher: _Batcher, offset: float, guard: LoadGuard
) -> None:
    with frozen_heap():  # no full collection walks the start-up's objects while load runs
        state.finished.wait()
        report = guard.stop()  # before the thaw, whose first full collection is not the load's
    batcher.close()
    done: dict[str, Any] = {
        "generator": generator_report(report, state),
        "sent": state.sent,
        "recorded": batcher.recorded,
        "cut_at_drain": state.cut_at_drain,
        "error": None if state.failure is None else repr(state.failure),
        "timeline": None,
    }
    if state.timeline is not None:
        t = state.timeline
        done["timeline"] = {
            "wall_start": t.wall_start,
            "t_start": t.t_start + offset,
            "measure_start": t.measure_start + offset,
            "measure_end": t.measure_end + offset,
            "t_end": t.t_end + offset,
            "wall_end": t.wall_end,
        }
    elif done["error"] is None:
        done["error"] = "the driver ended without a timeline"
    runner.send_message(MSG_DONE, done)


def host_port(text: str) -> tuple[str, int]:
    """A --master or --master-bind value; an empty host means every interface."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"expected HOST:PORT, got {text!r}")
    return host or "0.0.0.0", int(port)
