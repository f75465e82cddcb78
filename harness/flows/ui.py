"""`harness ui`: Locust's web UI on the scenario's target and workload, load set by hand.

Every request is recorded raw in a run folder, so `harness evaluate` can judge the session.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import harness.load  # noqa: F401  (first: gevent patches the standard library here)
from harness.flows.run import RunRequest, load_inputs, open_run, target_for
from harness.load.webui import serve_ui
from harness.records.log import RecordLog, consolidate

__all__ = ["RunRequest", "explore"]


def explore(
    req: RunRequest, host: str, port: int, announce: Callable[[str], None]
) -> tuple[Path, int]:
    """Serve the web UI until it is stopped; returns the run folder and its record count."""
    inputs = load_inputs(req)
    with target_for(req, inputs.scenario) as target:
        run_dir, manifest = open_run(
            req, inputs.scenario, inputs.policy_file, inputs.policy, target
        )
        manifest.notes.append("exploratory run from the Locust web UI: load set by hand")
        log = RecordLog(run_dir)
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
