"""`harness ui`: Locust's web UI drives the scenario's workload; raw records are kept."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.cli import HARNESS, ROOT, assert_exit_matches_verdict, only_run_dir, run_cli

from harness.records.log import read_frame

BASE = "tests/data/scenarios/base.yaml"

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def test_ui_swarms_shows_approximate_rows_and_keeps_raw_records(tmp_path: Path) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(HARNESS), "ui", BASE, "--out", str(tmp_path), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(base + "/", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the UI did not come up"
                time.sleep(0.2)
        form = urllib.parse.urlencode({"user_count": 2, "spawn_rate": 2}).encode()
        urllib.request.urlopen(base + "/swarm", data=form, timeout=5).close()
        rows: dict[str, int] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and min(rows.values(), default=0) < 5:
            time.sleep(0.5)
            stats = _get(base + "/stats/requests")["stats"]
            rows = {s["name"]: s["num_requests"] for s in stats if s["name"] != "Aggregated"}
        assert set(rows) == {"TTFT (approx.)", "E2EL (approx.)"}
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    run_dir = only_run_dir(tmp_path)
    df = read_frame(run_dir)
    assert len(df) >= rows["E2EL (approx.)"]
    assert df["error"].isna().all()  # stopping let in-flight requests finish
    judged = run_cli("evaluate", str(run_dir))
    assert_exit_matches_verdict(judged, run_dir)
