"""Locust at the edge: one driver user per load generator, a greenlet per request in flight.

Locust has no open-loop arrival model, so the driver sleeps to absolute Poisson times
and hands each arrival to a request greenlet (reused, capped: `load.arrivals`); closed loop
is N greenlets that each send their next request when the last ends. Every request becomes one
RequestRecord at once, handed to the sink (which appends it to disk). Locust's own
request event gets the end-to-end time for its UI, never for verdicts.
"""

from __future__ import annotations

import itertools
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gevent
import numpy as np
from gevent.event import Event
from gevent.pool import Group
from geventhttpclient.url import URL
from locust import FastHttpUser, constant, task
from locust.env import Environment
from locust.exception import StopUser

from harness.load.arrivals import Alarm, ArrivalWorkers
from harness.load.client import Cut, Exchange, RequestOptions, send
from harness.load.guard import LoadGuard, frozen_heap
from harness.load.openai_api import Endpoint, request_body
from harness.load.schedule import arrival_offsets, users_at
from harness.records.generator import GuardReport
from harness.records.record import ErrorClass, Phase, RequestRecord
from harness.records.run_dir import Timeline
from harness.spec.load import ClosedLoop, GammaArrivals, OpenArrival
from harness.spec.scenario import Scenario
from harness.workload.base import RequestSpec, Workload
from harness.workload.build import reply_counter

Sink = Callable[[RequestRecord], None]


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """Everything the driver needs, derived from the scenario (which is never rewritten)."""

    scenario: Scenario
    endpoint: Endpoint
    model: str
    workload: Workload
    worker: str = "local"
    worker_index: int = 0  # this generator's place among worker_count (distributed runs)
    worker_count: int = 1
    run_id: str = ""  # the run folder's name: each request's X-Request-Id starts with it
    locust_stats: bool = False  # fire Locust's request events (only its web UI reads them)

    @property
    def share(self) -> float:
        """This generator's part of the scenario's rate or users."""
        return 1.0 / self.worker_count


@dataclass(slots=True)
class RunState:
    sink: Sink
    finished: Event = field(default_factory=Event)
    timeline: Timeline | None = None
    group: Group = field(default_factory=Group)  # in-flight request greenlets
    cut_reason: str = "cut at the end of the drain timeout"
    sent: int = 0
    cut_at_drain: int = 0
    failure: BaseException | None = None
    dispatch_lags: list[float] = field(default_factory=list)  # wake-up lag per arrival
    on_send: Callable[[], None] | None = None  # live progress: one more request in flight
    stop_sending: Event = field(default_factory=Event)  # early stop: no new arrivals
    measure_start: float | None = None  # set by the schedule when it starts
    stopped_early: str | None = None  # why sending stopped before the planned end
    interrupted: str | None = None  # the signal that stopped the run (SIGINT, SIGTERM)
    t_interrupted: float | None = None  # when: monotonic, and wall-clock for reports
    wall_interrupted: float | None = None
    started: tuple[float, float] | None = None  # (wall, monotonic) when the schedule began
    planned_measure_end: float | None = None


@dataclass(frozen=True)
class LoadOutcome:
    """What the load phase did, for the manifest."""

    timeline: Timeline
    sent: int
    cut_at_drain: int
    stopped_early: str | None = None
    interrupted: str | None = None  # "SIGINT" / "SIGTERM" when the user stopped the run
    interrupted_at: float | None = None  # its wall-clock time
    # Per load generator ("local", or "w0", "w1", ...): its saturation guard's report
    # (GuardReport.to_dict()) plus "dispatch_lag_p99_s" (open loop) for the manifest.
    generators: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Driver(FastHttpUser):
    """Runs a whole schedule from its single task; configured by a generated subclass."""

    abstract = True
    wait_time = constant(0)
    plan: ClassVar[LoadPlan]
    state: ClassVar[RunState]

    @task
    def drive(self) -> None:
        try:
            LoadSchedule(self).run()
        except gevent.GreenletExit:
            raise  # stopped by run_load: not a failure
        except BaseException as exc:  # surfaced by run_load; never lost in Locust's logs
            self.state.failure = exc
        finally:
            self.state.finished.set()
        raise StopUser()


class LoadSchedule:
    """One run of the scenario's load from inside the driver greenlet."""

    def __init__(self, user: _Driver) -> None:
        self.user = user
        self.plan = user.plan
        sc = self.plan.scenario
        self.ids = itertools.count()
        self.reply_counter = reply_counter(
            self.plan.workload
        )  # tokens of replies sent without usage
        ep = self.plan.endpoint
        self.workers: ArrivalWorkers | None = None  # the open loop's request greenlets
        self.http = user.client.client.clientpool.get_client(URL(ep.base_url + ep.path))
        self.group = user.state.group
        self.wire_prefix = f"{self.plan.run_id or 'harness'}-"
        self.options = RequestOptions(
            endpoint=ep, stream=sc.target.stream, request_timeout_s=sc.target.request_timeout_s
        )

    def run(self) -> None:
        load = self.plan.scenario.load
        wall_start = time.time()
        self.t_start = time.monotonic()
        self.measure_start = self.t_start + load.warmup_s
        self.measure_end = self.measure_start + load.measured_s
        self.send_end = self.t_start + load.total_s
        self.user.state.measure_start = self.measure_start
        self.user.state.started = (wall_start, self.t_start)
        self.user.state.planned_measure_end = self.measure_end
        arrival = load.arrival
        if isinstance(arrival, ClosedLoop):
            self._closed_loop()
        else:
            self._open_loop(arrival)
        # With max_requests the schedule can run out before the window ends: rates are
        # over the time load was actually offered, not the planned window.
        sending_ended = min(self.measure_end, time.monotonic())
        if self.user.state.stop_sending.is_set():
            self.send_end = min(self.send_end, time.monotonic())
        self._drain(load.drain_timeout_s)
        self.user.state.timeline = Timeline(
            wall_start=wall_start,
            t_start=self.t_start,
            measure_start=self.measure_start,
            measure_end=max(sending_ended, self.measure_start),
            t_end=time.monotonic(),
            wall_end=time.time(),
        )

    def _request_id(self, index: int) -> int:
        """Arrival (session) ids unique across workers: worker w of n has w, w + n, w + 2n..."""
        return index * self.plan.worker_count + self.plan.worker_index

    def _open_loop(self, arrival: OpenArrival) -> None:
        load = self.plan.scenario.load
        workers = self.workers = ArrivalWorkers(self.group, arrival.max_concurrency, self._guarded)
        offsets = arrival_offsets(
            load.segments(),
            seed=self.plan.scenario.workload.seed + 7919 * self.plan.worker_index,
            burstiness=arrival.burstiness if isinstance(arrival, GammaArrivals) else 1.0,
            share=self.plan.share,
            limit=self._limit(),
        )
        alarm = Alarm(self.user.state.stop_sending)
        try:
            for index, offset in enumerate(offsets):
                intended = self.t_start + offset
                if alarm.sleep_until(intended):
                    break
                # How late the generator woke: queueing behind max_concurrency is not in it.
                self.user.state.dispatch_lags.append(time.monotonic() - intended)
                workers.submit(self._request_id(index), intended)
        finally:
            alarm.close()
            workers.close()

    def _limit(self) -> int | None:
        """This worker's part of max_requests."""
        total = self.plan.scenario.load.max_requests
        if total is None:
            return None
        n, w = self.plan.worker_count, self.plan.worker_index
        return total // n + (1 if w < total % n else 0)

    def _guarded(self, request_id: int, intended: float | None) -> None:
        """A bug in a request greenlet must stop the run, not vanish with the greenlet."""
        try:
            self._one(request_id, intended)
        except gevent.GreenletExit:
            raise
        except BaseException as exc:
            state = self.user.state
            if state.failure is None:
                state.failure = exc
            state.finished.set()
            raise

    def _closed_loop(self) -> None:
        """Users follow the load profile: slot k runs while the profile wants more than k."""
        segments = self.plan.scenario.load.segments()
        counter = itertools.count()
        limit = self._limit()
        wanted = 0
        exhausted = Event()
        users: dict[int, gevent.Greenlet] = {}

        stop = self.user.state.stop_sending

        def user_loop(slot: int) -> None:
            while time.monotonic() < self.send_end and slot < wanted and not stop.is_set():
                index = next(counter)
                if limit is not None and index >= limit:
                    exhausted.set()
                    return
                self._guarded(self._request_id(index), None)

        alarm = Alarm(exhausted)
        try:
            while not exhausted.is_set() and not stop.is_set():
                now = time.monotonic()
                if now >= self.send_end:
                    break
                wanted = users_at(segments, now - self.t_start, self.plan.share)
                for slot in range(wanted):
                    if slot not in users or users[slot].dead:
                        users[slot] = self.group.spawn(user_loop, slot)
                alarm.sleep_until(min(now + 0.1, self.send_end))
        finally:
            alarm.close()

    def _drain(self, timeout_s: float) -> None:
        deadline = max(time.monotonic(), self.send_end) + timeout_s
        self.group.join(timeout=max(0.0, deadline - time.monotonic()))
        queued = self.workers.queued if self.workers is not None else 0
        if len(self.group) or queued:  # in flight, and arrivals never sent (over the cap)
            self.user.state.cut_at_drain += len(self.group) + queued
            self.group.kill(block=True, timeout=10)

    def _one(self, session_uid: int, intended: float | None) -> None:
        """One arrival: a single request, or every turn of a conversation in order."""
        plan, state = self.plan, self.user.state
        counter = self.reply_counter
        want_text = plan.workload.needs_reply_text or counter is not None
        session = plan.workload.session(session_uid)
        reply: str | None = None
        while (spec := session.next_request(reply)) is not None:
            if spec.turn > 0:
                if spec.think_time_s:
                    gevent.sleep(spec.think_time_s)
                if intended is not None:
                    intended = time.monotonic()  # later turns follow the answer, not the clock
            request_id = next(self.ids) * plan.worker_count + plan.worker_index
            state.sent += 1
            if state.on_send is not None:
                state.on_send()
            body = request_body(plan.scenario, plan.model, spec)
            try:
                ex = send(self.http, self.options, body, state.cut_reason, want_text=want_text,
                          request_id=f"{self.wire_prefix}{request_id}")  # fmt: skip
            except Cut as cut:
                if state.interrupted is not None:
                    cut.exchange.error = ErrorClass.ABORTED
                    cut.exchange.error_detail = (
                        f"in flight when {state.interrupted} stopped the run"
                    )
                state.sink(_make_record(self, request_id, intended, cut.exchange, spec))
                raise
            if counter is not None and ex.output_tokens is None and ex.reply_text is not None:
                ex.output_tokens, counted = counter(ex.reply_text), True  # no usage sent
            else:
                counted = False
            record = _make_record(self, request_id, intended, ex, spec, counted)
            state.sink(record)
            if plan.locust_stats:
                self._report_to_locust(record)
            reply = ex.reply_text if ex.error is None else None

    def _report_to_locust(self, record: RequestRecord) -> None:
        """Locust's own statistics (its web UI) get TTFT and E2EL rows, marked approximate
        because Locust rounds them; verdicts never read them, only the raw records."""
        fire = self.user.environment.events.request.fire
        failure = None if record.ok else Exception(f"{record.error}: {record.error_detail}")
        end = record.t_last if record.t_last is not None else record.t_done
        fire(request_type="POST", name="E2EL (approx.)", response_time=(end - record.t_sent) * 1e3,
             response_length=record.output_tokens or 0, exception=failure, context={})  # fmt: skip
        if record.ok and record.t_first is not None and record.stream:
            fire(request_type="POST", name="TTFT (approx.)",
                 response_time=(record.t_first - record.t_sent) * 1e3, response_length=0,
                 exception=None, context={})  # fmt: skip

    def phase_of(self, ref: float) -> Phase:
        if ref < self.measure_start:
            return "warmup"
        return "measure" if ref < self.measure_end else "cooldown"


def _make_record(
    sched: LoadSchedule,
    index: int,
    intended: float | None,
    ex: Exchange,
    spec: RequestSpec,
    counted: bool = False,
) -> RequestRecord:
    chunks = tuple(ex.chunk_times)
    return RequestRecord(
        request_id=index,
        worker=sched.plan.worker,
        phase=sched.phase_of(intended if intended is not None else ex.t_sent),
        stream=sched.plan.scenario.target.stream,
        wall_sent=ex.wall_sent,
        t_intended=intended,
        t_sent=ex.t_sent,
        t_first=chunks[0] if chunks else None,
        t_last=chunks[-1] if chunks else None,
        t_done=ex.t_done,
        chunk_times=chunks,
        prompt_tokens=ex.prompt_tokens,
        output_tokens=ex.output_tokens,
        status=ex.status,
        error=ex.error,
        error_detail=ex.error_detail,
        session=spec.session,
        turn=spec.turn,
        planned_prompt_tokens=spec.planned_prompt_tokens,
        max_tokens=spec.max_tokens,
        output_counted=counted,
        served_by=ex.served_by,
        fallbacks=ex.fallbacks,
        retries=ex.retries,
        served_model=ex.served_model,
    )


class OpenAIDriver(_Driver):
    """The one user class every generator process registers (the same name on master and
    workers); `configure_driver` sets its plan before Locust spawns it."""

    abstract = False


def configure_driver(plan: LoadPlan, state: RunState) -> type[OpenAIDriver]:
    """Point the driver class at a plan; Locust reads these attributes when it spawns it."""
    sc = plan.scenario
    arrival = sc.load.arrival
    if isinstance(arrival, ClosedLoop):
        peak = max(max(seg.level0, seg.level1) for seg in sc.load.segments())
        concurrency = max(1, math.ceil(peak * plan.share))
    else:
        concurrency = arrival.max_concurrency
    OpenAIDriver.host = plan.endpoint.base_url
    OpenAIDriver.concurrency = concurrency  # a connection per in-flight request: no hidden queue
    OpenAIDriver.connection_timeout = sc.target.connect_timeout_s
    OpenAIDriver.network_timeout = sc.target.read_timeout_s
    OpenAIDriver.plan = plan
    OpenAIDriver.state = state
    return OpenAIDriver


def stop_on_signals(state: RunState, stop_signal: list[int]) -> None:
    """The one place SIGINT (Ctrl-C) and SIGTERM (a cancelled CI job) are handled while load
    runs: on the event loop's own watcher, never inside a request greenlet, each becomes an
    orderly stop. What is in flight is then recorded as aborted, the run folder stays
    consistent and the simulator is stopped. The handlers stay for the rest of the process, so
    a second signal cannot cut the clean-up short."""

    def on_signal(signum: int) -> None:
        if not stop_signal:
            state.interrupted = signal.Signals(signum).name
            state.t_interrupted = time.monotonic()
            state.wall_interrupted = time.time()
        stop_signal.append(signum)
        # Nothing new goes out after a stop: an arrival dispatched while the run is torn
        # down would be late by the teardown, and counted as the generator's lag.
        state.stop_sending.set()
        state.finished.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, on_signal, signum)


def cut_in_flight(state: RunState) -> None:
    """Record what is still in flight as cut, then stop it (after the driver is stopped)."""
    if len(state.group):
        state.cut_reason = "cut when the run was stopped"
        state.group.kill(block=True, timeout=10)


def generator_report(guard: GuardReport, state: RunState) -> dict[str, Any]:
    """What the manifest keeps about one load generator, for the saturation verdict."""
    lags = state.dispatch_lags
    p99 = float(np.percentile(lags, 99)) if lags else None
    return {**guard.to_dict(), "dispatch_lag_p99_s": p99, "arrivals": len(lags)}


def run_load(
    plan: LoadPlan,
    sink: Sink,
    on_send: Callable[[], None] | None = None,
    decide_early: Callable[[float], str | None] | None = None,
) -> LoadOutcome:
    """Drive the scenario's load through Locust (as a library) and return the timeline.

    ``decide_early(measure_start)``, with the scenario's ``load.early_stop``, is asked at
    every look; a reason back stops sending (in-flight requests still finish).
    """
    state = RunState(sink=sink, on_send=on_send)
    env = Environment(user_classes=[configure_driver(plan, state)])
    runner = env.create_local_runner()
    budget = plan.scenario.load.total_s + plan.scenario.load.drain_timeout_s + 60.0
    stop_signal: list[int] = []
    stop_on_signals(state, stop_signal)
    guard = LoadGuard()
    guard.start()
    early = plan.scenario.load.early_stop
    looker = None
    if early is not None and decide_early is not None:
        looker = gevent.spawn(_look, state, early.every_s, early.min_s, decide_early)
    try:
        # The guard stops before the heap thaws: the first full collection after the thaw
        # walks every start-up object (70-120 ms here) and is the run's end, not its load.
        with frozen_heap():
            try:
                runner.start(1, spawn_rate=1)
                state.finished.wait(timeout=budget)
            finally:
                state.stop_sending.set()  # no arrival is dispatched unwatched by the guard
                if looker is not None:
                    looker.kill(block=False)
                report = guard.stop()
    finally:
        runner.quit()  # first the driver, so nothing new is spawned ...
        cut_in_flight(state)  # ... then what was in flight, each recorded as cut
    if state.failure is not None:
        raise state.failure
    if state.interrupted is not None:
        state.timeline = _timeline_at_interrupt(state)
    if state.timeline is None:
        raise RuntimeError(f"load did not finish within {budget:.0f} s")
    return LoadOutcome(
        timeline=state.timeline,
        sent=state.sent,
        cut_at_drain=state.cut_at_drain,
        stopped_early=state.stopped_early,
        interrupted=state.interrupted,
        interrupted_at=state.wall_interrupted,
        generators={plan.worker: generator_report(report, state)},
    )


def _timeline_at_interrupt(state: RunState) -> Timeline:
    """The run's marks when a signal stopped it: the measured window ends at the signal (or
    is empty if the signal came during the warm-up)."""
    now, wall_now = time.monotonic(), time.time()
    wall_start, t_start = state.started or (wall_now, now)
    measure_start = state.measure_start if state.measure_start is not None else now
    stop = state.t_interrupted if state.t_interrupted is not None else now
    planned_end = state.planned_measure_end if state.planned_measure_end is not None else stop
    return Timeline(
        wall_start=wall_start,
        t_start=t_start,
        measure_start=measure_start,
        measure_end=max(measure_start, min(planned_end, stop)),
        t_end=now,
        wall_end=wall_now,
    )


def _look(
    state: RunState, every_s: float, min_s: float, decide: Callable[[float], str | None]
) -> None:
    """The early-stop looks: from ``min_s`` into the measured window, every ``every_s``."""
    while state.measure_start is None:
        gevent.sleep(0.1)
    next_at = state.measure_start + min_s
    while not state.finished.is_set() and not state.stop_sending.is_set():
        gevent.sleep(max(0.0, next_at - time.monotonic()))
        next_at += every_s
        # In a real thread: a look analyses every record so far, and on the event loop it
        # would delay the timestamps of chunks arriving meanwhile.
        reason = gevent.get_hub().threadpool.apply(decide, (state.measure_start,))
        if reason is not None:
            state.stopped_early = reason
            state.stop_sending.set()
            return
