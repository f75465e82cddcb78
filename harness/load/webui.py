"""`harness ui`: Locust's web UI on a scenario's target and workload, for exploring by hand.

Users set in the UI each run the scenario's sessions back to back (closed loop), through the
same client and request code as `harness run`. The UI shows TTFT and E2EL rows as Locust
rounds them (labelled approximate); every request is still recorded raw in a run folder, so
`harness evaluate` can judge an exploratory session properly afterwards.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable
from typing import ClassVar

from locust import FastHttpUser, constant, task
from locust.env import Environment

from harness.load.driver import LoadPlan, LoadSchedule, RunState, stop_on_signals
from harness.load.openai_api import endpoint_for
from harness.records.log import RecordLog
from harness.spec.scenario import Scenario
from harness.workload.base import Workload

_sessions = itertools.count()


class InteractiveUser(FastHttpUser):
    """One closed-loop user: sessions of the scenario's workload, one after another."""

    abstract = False
    wait_time = constant(0)
    concurrency = 1
    plan: ClassVar[LoadPlan]
    state: ClassVar[RunState]

    def on_start(self) -> None:
        self.schedule = LoadSchedule(self)  # type: ignore[arg-type]
        self.schedule.measure_start = -math.inf  # everything here is "measured"
        self.schedule.measure_end = math.inf

    @task
    def session(self) -> None:
        self.schedule._guarded(next(_sessions), None)


def serve_ui(
    scenario: Scenario,
    workload: Workload,
    url: str,
    model: str,
    log: RecordLog,
    host: str,
    port: int,
    announce: Callable[[str], None],
) -> int:
    """Serve the UI until Ctrl-C or SIGTERM; returns how many records were written."""
    plan = LoadPlan(scenario=scenario, endpoint=endpoint_for(scenario, url), model=model,
                    workload=workload, run_id=log.path.parent.name, locust_stats=True)  # fmt: skip
    state = RunState(sink=log.write)
    InteractiveUser.host = plan.endpoint.base_url
    InteractiveUser.connection_timeout = scenario.target.connect_timeout_s
    InteractiveUser.network_timeout = scenario.target.read_timeout_s
    InteractiveUser.plan = plan
    InteractiveUser.state = state
    # Locust's UI re-parses sys.argv with its own parser to list extra options: give it
    # none of ours, or each page load fails on `harness ui` flags it does not know.
    sys.argv = sys.argv[:1]
    env = Environment(user_classes=[InteractiveUser])
    # On stop, let each user finish the request it is on: an exploratory session should not
    # end with a row of errors that only the stop caused.
    env.stop_timeout = scenario.target.request_timeout_s
    runner = env.create_local_runner()
    web = env.create_web_ui(host=host, port=port)
    announce(f"Locust UI on http://{host}:{port} (TTFT/E2EL rows there are approximate); "
             "Ctrl-C to stop")  # fmt: skip
    stop_signal: list[int] = []
    stop_on_signals(state, stop_signal)
    try:
        state.finished.wait()
    finally:
        runner.quit()
        web.stop()  # type: ignore[no-untyped-call]
    return log.count
