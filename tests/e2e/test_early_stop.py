"""Early decision end to end: a run planned for a minute stops once every critical
objective is decided, says why, and is judged at the confidence its looks spent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.cli import only_run_dir, read_json, run_cli

from harness.records.log import read_frame

pytestmark = pytest.mark.e2e

BASE = "tests/data/scenarios/base.yaml"


def stopped_early(tmp_path: Path, min_s: int, *extra: str) -> tuple[Path, dict[str, Any]]:
    """A 60 s run at 100 req/s with looks every 2 s; it must stop early. Its folder and
    manifest."""
    proc = run_cli(
        "run", BASE, "--out", str(tmp_path), *extra,
        "--set", "load.arrival={type: poisson, rate: 100, max_concurrency: 128}",
        "--set", "load.warmup_s=1", "--set", "load.duration_s=60",
        "--set", f"load.early_stop={{every_s: 2, min_s: {min_s}}}",
        timeout=150,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stopped early: every critical objective decided" in proc.stderr
    run_dir = only_run_dir(tmp_path)
    manifest: dict[str, Any] = read_json(run_dir / "manifest.json")
    return run_dir, manifest


def test_a_decided_run_stops_early(tmp_path: Path) -> None:
    run_dir, manifest = stopped_early(tmp_path, 2)
    early = manifest["load"]["early_stop"]
    assert early["looks_planned"] == 30  # (60 - 2) / 2 + 1
    assert early["confidence_per_look"] == pytest.approx(1 - 0.05 / 30)
    assert early["stopped"].startswith("every critical objective decided at look ")
    timeline = manifest["timeline"]
    measured = timeline["measure_end"] - timeline["measure_start"]
    assert measured < 30  # decided long before the planned minute
    frame = read_frame(run_dir)
    assert len(frame) == manifest["records"]
    verdict = read_json(run_dir / "verdict.json")
    assert verdict["decision"] == "PASS"
    # Judged at the per-look confidence: the bounds are those of 1 - 0.05/30 one-sided.
    assert all(o["verdict"] == "PASS" for o in verdict["objectives"])


def test_a_distributed_run_stops_early_on_every_worker(tmp_path: Path) -> None:
    run_dir, manifest = stopped_early(tmp_path, 3, "--workers", "2")
    assert manifest["load"]["early_stop"]["stopped"]
    assert set(manifest["load"]["generators"]) == {"w0", "w1"}
    timeline = manifest["timeline"]
    assert timeline["measure_end"] - timeline["measure_start"] < 30
    assert manifest["records"] == manifest["load"]["sent"] == len(read_frame(run_dir))
    assert read_json(run_dir / "verdict.json")["decision"] == "PASS"
