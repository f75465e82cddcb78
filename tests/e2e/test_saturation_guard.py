"""A starved load generator must give an INVALID verdict (exit 4), never a PASS.

The starvation is real, not a test hook: the child process spawns a greenlet that holds
the event loop 80 ms at a time, then runs `harness run` in the same loop. It pauses on a
1 ms timer, not sleep(0): gevent runs timers and I/O only every 50 sleep(0) callbacks, so a
sleep(0) hog stalls the loop ~4 s at a time and the run fails on latency (exit 1) anyway.
With a timer pause the latencies still pass the runbook policy (seen: TTFT p50 81 ms for
16 ms, median ITL 0 as chunks pile up, E2EL p50 325 ms), so only the guard stands between
this run and a false PASS.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import ROOT, only_run_dir, read_json

pytestmark = pytest.mark.e2e

PROGRAM = """
import sys, time
import gevent

def hog(busy_s):
    while True:
        end = time.perf_counter() + busy_s
        while time.perf_counter() < end:
            pass
        gevent.sleep(0.001)

busy_ms, out = float(sys.argv[1]), sys.argv[2]
if busy_ms:
    gevent.spawn(hog, busy_ms / 1e3)
from harness.cli import main
main(["run", "tests/data/scenarios/base.yaml", "--out", out,
      "--set", "load.duration_s=5", "--set", "load.warmup_s=0"])
"""


def run_beside_hog(busy_ms: float, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, str(busy_ms), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_starved_generator_makes_the_run_invalid(tmp_path: Path) -> None:
    proc = run_beside_hog(80, tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    verdict = read_json(only_run_dir(tmp_path) / "verdict.json")
    assert verdict["decision"] == "INVALID"
    assert "event-loop lag" in verdict["invalid_reason"]


def test_the_same_run_without_the_hog_passes(tmp_path: Path) -> None:
    proc = run_beside_hog(0, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    verdict = read_json(only_run_dir(tmp_path) / "verdict.json")
    assert verdict["decision"] == "PASS"
    assert verdict["invalid_reason"] is None
