"""`harness tune` on the simulator, whose settings imply the ranking.

The derivation (tests/data/studies/batch.yaml, tests/data/scenarios/tune.yaml): 16 users in
a closed loop, each asking for T = 16 tokens; a step costs s(m) = b + c m with b = 5 ms,
c = 0.2 ms and m the sequences in the batch. With a batch limit m <= 16 the batch is always
full (16 users wait for m slots), so a request takes about T steps and the server finishes
m requests every T s(m): m / (T (b + c m)) requests a second, 23, 43, 76 and 122 for
m = 2, 4, 8, 16, more with every doubling. Every user waits its turn, so E2EL is about
16 / throughput: 690, 370, 210 and 130 ms. The policy bounds E2EL p90 at 300 ms: 8 and 16
pass, 2 and 4 do not; the best passing setting is 16.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from support.browser import inspect_page, require_chromium
from support.cli import HARNESS, ROOT, read_json, run_cli

from harness.errors import ExitCode

pytestmark = pytest.mark.e2e

STUDY = "tests/data/studies/batch.yaml"


def implied_throughput(m: int) -> float:
    study = yaml.safe_load((ROOT / STUDY).read_text())
    sim = study["launcher"]["sim"]
    tokens = yaml.safe_load((ROOT / "tests/data/scenarios/tune.yaml").read_text())["workload"][
        "max_tokens"
    ]
    return float(m / (tokens * (sim["step_base_s"] + sim["per_seq_s"] * m)))


def measured_in_journal(folder: Path) -> int:
    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    record = optuna.load_study(study_name="batch", storage=storage)
    return sum(t.user_attrs.get("status") == "measured" for t in record.trials)


def launched(folder: Path) -> set[str]:
    return {p.parent.name for p in folder.glob("trial-*/server.log")}


def measured(folder: Path) -> int:
    """How many settings study.json lists as measured (0 before it is first written)."""
    path = folder / "study.json"
    if not path.is_file():
        return 0
    return sum(t["status"] == "measured" for t in read_json(path)["trials"])


def test_a_killed_study_resumes_and_ranks_the_settings_as_implied(tmp_path: Path) -> None:
    folder = tmp_path / "tune-batch"
    proc = subprocess.Popen([str(HARNESS), "tune", STUDY, "--out", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if measured(folder) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)  # a kill: nothing cleans up
    finally:
        proc.kill()
        proc.communicate()
    time.sleep(1.0)  # the simulator dies with its parent (PR_SET_PDEATHSIG)
    before, first = launched(folder), measured_in_journal(folder)
    assert 2 <= first < 4

    rerun = run_cli("tune", STUDY, "--out", str(tmp_path), timeout=240)
    assert rerun.returncode == ExitCode.PASS, rerun.stdout + rerun.stderr  # 8 or 16 passes
    assert f"{first} of 4 settings done (not measured again)" in rerun.stderr
    doc: dict[str, Any] = read_json(folder / "study.json")
    rows = doc["trials"]
    assert [r["status"] for r in rows] == ["measured"] * 4
    after = launched(folder)
    assert before <= after
    assert len(after - before) == 4 - first  # only what was left was launched again

    by_m = {r["params"]["max_num_seqs"]: r for r in rows}
    order = sorted(by_m, key=lambda m: -by_m[m]["throughput"])
    assert order == sorted(by_m, key=lambda m: -implied_throughput(m)) == [16, 8, 4, 2]
    for m, row in by_m.items():  # requests a second within 25 % of the derivation
        assert row["request_rate"] == pytest.approx(implied_throughput(m), rel=0.25), row
    # the latency axis (E2EL p90) against the 300 ms target: 8 and 16 hold it, 2 and 4 not
    assert {m for m in by_m if by_m[m]["latency"] < 0.3} == {8, 16}
    assert by_m[2]["verdict"] == "FAIL"  # 690 ms, beyond the alert (600 ms); 4 is near 370 ms
    # The verdict may also be WARN on a busy machine (a client-vs-server check that disagrees):
    # then the best is the other one; it is always the best of those that PASS.
    passing = [m for m in by_m if by_m[m]["verdict"] == "PASS"]
    assert passing
    top = max(passing)
    assert doc["best"]["params"] == {"max_num_seqs": top}
    assert f"--max-num-seqs {top}" in doc["best"]["vllm_serve"]
    assert f"--max-num-seqs={top}" in doc["best"]["isvc_patch"]["spec"]["predictor"]["model"][
        "args"]  # fmt: skip
    assert set(doc["pareto"]) == {by_m[16]["number"]}  # more throughput and less latency
    summary = (folder / "summary.md").read_text()
    assert "vllm serve" in summary
    assert "| 1 |" in summary
    assert f"max_num_seqs={top}" in rerun.stdout


def test_a_setting_that_does_not_start_is_recorded_and_the_study_finishes(tmp_path: Path) -> None:
    proc = run_cli("tune", "tests/data/studies/memory.yaml", "--out", str(tmp_path), timeout=120)
    doc: dict[str, Any] = read_json(tmp_path / "tune-memory" / "study.json")
    # 0 when the measured setting PASSes; 1 when a busy machine makes its verdict WARN
    assert proc.returncode == (ExitCode.PASS if doc["best"] else ExitCode.FAIL), proc.stderr
    by_share = {r["params"]["gpu_memory_utilization"]: r for r in doc["trials"]}
    failed = by_share[0.1]
    assert failed["status"] == "launch_failed"
    assert any("no GPU memory for the KV cache" in line for line in failed["log_tail"]), failed
    assert by_share[0.9]["status"] == "measured"
    assert by_share[0.9]["verdict"] in ("PASS", "WARN")
    assert "launch failed" in proc.stderr
    assert "Traceback" not in proc.stderr
    require_chromium()  # the study's own report.html, as written by the study
    page = inspect_page(tmp_path / "tune-memory" / "report.html")
    assert page.errors == []
    assert page.blocked_requests == []
    assert page.plots["study-pareto"]
    assert all(points > 0 for points in page.plots["study-pareto"])


def test_a_bad_study_file_names_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "scenario": "s.yaml", "launcher": {"type": "sim"},
                                   "grid": {"max_num_seqs": [8]}, "trials": 3}))  # fmt: skip
    proc = run_cli("tune", str(bad), "--out", str(tmp_path))
    assert proc.returncode == ExitCode.USAGE
    assert "trials" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad.write_text(yaml.safe_dump({"name": "x", "scenario": "s.yaml",
                                   "launcher": {"type": "cloud"}, "grid": {"a": [1]}}))  # fmt: skip
    proc = run_cli("tune", str(bad), "--out", str(tmp_path))
    assert proc.returncode == ExitCode.USAGE
    assert "launcher" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ctrl_c_stops_the_server_and_keeps_what_was_measured(tmp_path: Path) -> None:
    folder = tmp_path / "tune-batch"
    proc = subprocess.Popen([str(HARNESS), "tune", STUDY, "--out", str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if measured(folder) >= 1 and len(launched(folder)) >= 2:
                break  # the first setting is measured, the next server is starting or up
            time.sleep(0.2)
        time.sleep(2.0)
        running = proc.poll() is None
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert running, "the study ended before the signal was sent: " + out + err
    assert proc.returncode == ExitCode.INTERRUPTED, out + err
    assert "rerun the same command to measure the rest" in err
    assert "Traceback" not in err
    doc = read_json(folder / "study.json")
    assert [t["status"] for t in doc["trials"]] == ["measured"]
    assert not doc["complete"]
    # the cut setting's server is gone: nothing listens on its port any more
    log = (folder / "trial-001" / "server.log").read_text()
    port = int(log.split("--port ")[1].split()[0])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
