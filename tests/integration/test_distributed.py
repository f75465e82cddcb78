"""Distributed load on Locust's master/worker mode, on loopback: no record lost, same verdict."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support.cli import HARNESS, ROOT, only_run_dir, read_json, run_cli

from harness.load.target import simulator
from harness.records.log import read_frame

pytestmark = pytest.mark.integration

SMOKE = "tests/data/scenarios/base.yaml"
SETS = ("--set", "load.duration_s=5", "--set", "load.warmup_s=1", "--set", "load.arrival.rate=20")


def _verdict_core(path: Path) -> list[tuple[str, str, float | None, int]]:
    data = json.loads(path.read_text())
    return [(o["name"], o["verdict"], o["estimate"], o["n"]) for o in data["objectives"]]


def test_two_local_workers_lose_no_record_and_judge_like_the_merged_file(tmp_path: Path) -> None:
    with simulator({}) as url:
        proc = run_cli("run", SMOKE, "--target", url, "--out", str(tmp_path), "--workers", "2",
                       *SETS)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = only_run_dir(tmp_path)
    manifest = read_json(run_dir / "manifest.json")
    df = read_frame(run_dir)
    assert set(manifest["load"]["generators"]) == {"w0", "w1"}  # each with its guard report
    assert manifest["load"]["sent"] == manifest["records"] == len(df)
    assert set(df["worker"]) == {"w0", "w1"}
    assert df["request_id"].is_unique
    # Each worker carried about half of the 20 req/s.
    per_worker = df.groupby("worker").size()
    assert per_worker.min() > 0.3 * len(df)
    first = _verdict_core(run_dir / "verdict.json")
    again = run_cli("evaluate", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert _verdict_core(run_dir / "verdict.json") == first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_started_separately_joins_the_master(tmp_path: Path) -> None:
    port = _free_port()
    with simulator({}) as url:
        master = subprocess.Popen(
            [str(HARNESS), "run", SMOKE, "--target", url, "--out", str(tmp_path),
             "--workers", "1", "--master-bind", f"127.0.0.1:{port}", *SETS],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(1.0)
        worker = subprocess.Popen(
            [str(HARNESS), "worker", "--master", f"127.0.0.1:{port}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            out, err = master.communicate(timeout=90)
            assert worker.wait(timeout=30) == 0
        finally:
            master.kill()
            worker.kill()
    assert master.returncode == 0, out + err
    assert "waiting for 1 worker" in err
    run_dir = only_run_dir(tmp_path)
    assert read_json(run_dir / "manifest.json")["records"] == len(read_frame(run_dir)) > 0
