"""A run stopped by Ctrl-C or SIGTERM against a healthy target: every request sent has its
record on disk (the server's own count agrees), those in flight are aborted rather than
failed, and the verdict on what was measured is never a FAIL made of the stop."""

from __future__ import annotations

import calendar
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.cli import HARNESS, ROOT, only_run_dir, read_json, simulator_requests

from harness.errors import ExitCode
from harness.load.target import simulator
from harness.records.log import read_frame

pytestmark = pytest.mark.e2e

BASE = "tests/data/scenarios/base.yaml"
# Streams of about 1.6 s (80 tokens 20 ms apart) at 8 req/s: a dozen in flight at any time.
SLOW_STREAMS = {"step_base_s": 0.02, "per_seq_s": 0.0}
POLICY = """schema: 1
name: healthy
objectives:
  - {name: e2el-p50, metric: e2el, stat: p50, target: 5s, alert: 10s}
  - {name: error-rate, metric: error_rate, stat: value, target: 30%, alert: 60%}
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_is_judged_on_what_it_measured(
    tmp_path: Path, signum: signal.Signals
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    with simulator(SLOW_STREAMS) as url:
        proc = subprocess.Popen(
            [str(HARNESS), "run", BASE, "--target", url, "--out", str(tmp_path / "out"),
             "--policy", str(policy), "--set", "load.warmup_s=1", "--set", "load.duration_s=60",
             "--set", "workload.max_tokens=80", "--set", "workload.ignore_eos=true"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            time.sleep(9.0)  # past the warm-up and start-up (about 4 s), with requests in flight
            signalled = time.time()
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        time.sleep(0.5)  # the server finishes counting the requests cut at the stop
        served = simulator_requests(url)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in out + err
    run_dir = only_run_dir(tmp_path / "out")
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "interrupted"
    assert manifest["load"]["interrupted"]["signal"] == signum.name
    at = calendar.timegm(time.strptime(manifest["load"]["interrupted"]["at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(at - signalled) < 2.0  # the signal's time, not the end of the clean-up
    df = read_frame(run_dir)
    assert manifest["target"]["preflight"]["status"] == 200  # the one request before the load
    assert manifest["records"] == len(df) == manifest["load"]["sent"] == served - 1
    aborted = df[df["error"] == "aborted"]
    assert len(aborted) > 0
    assert not df["error"].isin(["incomplete", "broken_stream", "connect", "timeout"]).any()
    verdict = read_json(run_dir / "verdict.json")
    generators = manifest["load"]["generators"]
    assert verdict["decision"] == "PASS", (verdict["invalid_reason"], generators)
    assert verdict["summary"]["errors"] == 0
    assert verdict["summary"]["requests"] == int((df["phase"] == "measure").sum()) - int(
        (aborted["phase"] == "measure").sum()
    )
    assert f"{len(aborted)} request(s) in flight were aborted" in verdict["interrupted"]
    assert "cut short" in (run_dir / "summary.md").read_text(encoding="utf-8")
    # Re-judging the folder reaches the same verdict.
    before = (run_dir / "verdict.json").read_bytes()
    again = subprocess.run([str(HARNESS), "evaluate", str(run_dir)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert again.returncode == ExitCode.PASS, again.stderr
    assert (run_dir / "verdict.json").read_bytes() == before
