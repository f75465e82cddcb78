"""The CLI end to end on the built-in target and on a second simulator given as --target."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support.cli import (
    HARNESS,
    ROOT,
    assert_exit_matches_verdict,
    only_run_dir,
    read_json,
    run_cli,
    simulator_requests,
)

from harness.load.target import simulator
from harness.records.log import read_frame

pytestmark = pytest.mark.e2e

SMOKE = "scenarios/smoke.yaml"  # the README's demo, run as users run it
BASE = "tests/data/scenarios/base.yaml"  # short runs, judged by a policy they can decide
SHORT = ("--set", "load.duration_s=5", "--set", "load.warmup_s=1")
RUN_FILES = ("manifest.json", "records.parquet", "verdict.json", "summary.md", "junit.xml")


def test_demo_on_the_built_in_target(tmp_path: Path) -> None:
    proc = run_cli("run", SMOKE, "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "p99-latency" in proc.stdout
    assert "PASS" in proc.stdout
    run_dir = only_run_dir(tmp_path)
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    verdict = read_json(run_dir / "verdict.json")
    assert verdict["decision"] == "PASS"
    summary = verdict["summary"]
    assert summary["requests"] > 3000  # enough to show the 0.1 % error rate at 95 %
    assert summary["errors"] == 0
    assert 0 < summary["ttft_s"]["p50"] < summary["e2el_s"]["p50"]
    by_name = {o["name"]: o for o in verdict["objectives"]}
    assert by_name["gpu-utilization"]["verdict"] == "INCONCLUSIVE"  # no GPU here: never a pass
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["schema"] == 1
    assert manifest["status"] == "complete"
    assert manifest["target"]["kind"] == "simulator"
    assert manifest["records"] == len(read_frame(run_dir))
    # Re-judging the stored run gives the same decision.
    again = run_cli("evaluate", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert read_json(run_dir / "verdict.json")["decision"] == "PASS"


def test_measured_ttft_and_itl_match_the_simulator(tmp_path: Path) -> None:
    # About 95 ms TTFT (a GPU-like prefill of ~75 prompt tokens) and 20 ms between tokens.
    step, per_token = 0.020, 0.001
    settings = {"step_base_s": step, "per_seq_s": 0.0, "prefill_per_token_s": per_token}
    with simulator(settings) as url:
        proc = run_cli(
            "run", BASE, "--target", url, "--out", str(tmp_path),
            "--set", "load.arrival={type: concurrency, users: 1}",
            "--set", "load.duration_s=6", "--set", "load.warmup_s=1",
            "--set", "workload.max_tokens=16",
        )  # fmt: skip
    assert_exit_matches_verdict(proc, only_run_dir(tmp_path))  # timing is the subject
    df = read_frame(only_run_dir(tmp_path))
    df = df[(df["phase"] == "measure") & df["error"].isna()]
    assert len(df) >= 10
    ttft = (df["t_first"] - df["t_sent"]).to_numpy()
    expected_ttft = step + per_token * df["prompt_tokens"].to_numpy()
    itl = np.concatenate([np.diff(np.asarray(c)) for c in df["chunk_times"]])
    ttft_err = float(np.median(ttft - expected_ttft))
    itl_med = float(np.median(itl))
    assert abs(ttft_err) <= max(0.001, 0.02 * float(np.median(expected_ttft))), ttft_err
    assert abs(itl_med - step) <= max(0.001, 0.02 * step), itl_med


@pytest.mark.parametrize(
    ("sim", "objective"),
    [
        ({"error_rate": 0.5}, "error-rate"),  # clearly past the 20 % alert on ~40 requests
        ({"step_base_s": 0.08}, "p50-latency"),
    ],
    ids=["errors", "slow"],
)
def test_faults_fail_the_verdict(tmp_path: Path, sim: dict[str, float], objective: str) -> None:
    with simulator(sim) as url:
        proc = run_cli("run", BASE, "--target", url, "--out", str(tmp_path), *SHORT)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdict = read_json(only_run_dir(tmp_path) / "verdict.json")
    assert verdict["decision"] == "FAIL"
    assert {o["name"]: o["verdict"] for o in verdict["objectives"]}[objective] == "FAIL"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_stopped_target_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    proc = run_cli("run", BASE, "--target", url, "--out", str(tmp_path))
    assert proc.returncode == 4
    assert "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_scenario_exit_2_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nload: {arrival: {type: poisson, rate: -1}, duration_s: 5}\n")
    proc = run_cli("run", str(bad), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert str(bad) in proc.stderr
    assert "load.arrival.rate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_api_key_is_sent_and_never_written(tmp_path: Path) -> None:
    key = "sk-test-0123456789abcdef"
    with simulator({"api_key": key}) as url:
        ok = run_cli("run", BASE, "--target", url, "--out", str(tmp_path / "ok"), *SHORT,
                     env={"OPENAI_API_KEY": key})  # fmt: skip
        bad = run_cli("run", BASE, "--target", url, "--out", str(tmp_path / "bad"), *SHORT,
                      env={"OPENAI_API_KEY": "wrong"})  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert bad.returncode == 2  # a refused key is the job's input to fix, not a verdict
    assert "401" in bad.stderr
    assert "Traceback" not in bad.stderr
    for proc in (ok, bad):
        assert key not in proc.stdout + proc.stderr
    for path in (tmp_path / "ok").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_killed_run_keeps_its_records_and_can_be_judged(tmp_path: Path) -> None:
    # The simulator is the test's, so it outlives the kill and can say what it served.
    with simulator({}) as url:
        proc = subprocess.Popen(
            [str(HARNESS), "run", BASE, "--target", url, "--out", str(tmp_path),
             "--set", "load.duration_s=60", "--set", "load.warmup_s=0"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            jsonl: Path | None = None
            while time.monotonic() < deadline:
                found = list(tmp_path.glob("*/records.jsonl"))
                if found and found[0].stat().st_size > 5000:
                    jsonl = found[0]
                    break
                time.sleep(0.2)
            assert jsonl is not None, "no records appeared while the run went"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its collector, no clean-up
            proc.wait(timeout=10)
        time.sleep(0.5)
        served = simulator_requests(url)
    run_dir = jsonl.parent
    assert read_json(run_dir / "manifest.json")["status"] == "running"
    # Flushed per record: only what was in flight or ended in the last moments can be
    # missing, at 8 req/s of ~0.5 s requests at most a second's worth and what was running.
    on_disk = len(read_frame(run_dir))
    assert 0 <= served - 1 - on_disk <= 16, (served, on_disk)  # 1: the test request
    judged = run_cli("evaluate", str(run_dir))
    assert_exit_matches_verdict(judged, run_dir)
    verdict = read_json(run_dir / "verdict.json")
    assert verdict["summary"]["requests"] > 0


def test_sigterm_stops_cleanly_keeping_records_and_stopping_the_simulator(
    tmp_path: Path,
) -> None:
    proc = subprocess.Popen(
        [str(HARNESS), "run", BASE, "--out", str(tmp_path), "--set", "load.duration_s=60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(tmp_path.glob("*/records.jsonl")):
            time.sleep(0.2)
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted by SIGTERM" in out
    assert "Traceback" not in err
    run_dir = only_run_dir(tmp_path)
    manifest = read_json(run_dir / "manifest.json")
    assert manifest["status"] == "interrupted"
    assert manifest["load"]["interrupted"]["signal"] == "SIGTERM"
    assert manifest["records"] == len(read_frame(run_dir)) > 0
    assert "interrupted" in read_json(run_dir / "verdict.json")
    port = int(manifest["target"]["url"].split(":")[2].split("/")[0])
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):
        s.connect(("127.0.0.1", port))  # the simulator went with the run
