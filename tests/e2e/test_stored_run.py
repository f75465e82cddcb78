"""A run folder written by an earlier version is judged the same, byte for byte, and judging
it (or writing alert rules) never loads the load generator's Locust and gevent.

``tests/data/runs/stored-run`` is a 4-second run of the smoke scenario on the simulator,
written by the harness before its modules moved into stage packages, with the verdict files
that version's ``harness evaluate`` wrote; the move left them byte-identical. They change only
when the judge changes on purpose, in the same commit that says why (since then: windowed
objectives judged at a Bonferroni share of the confidence). Its policy has every kind of
objective: client percentiles, a mean, a windowed one, a share under a bound, rates, server
histograms, counters and gauges, and a GPU row without data.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import ROOT

from harness.errors import ExitCode

STORED = ROOT / "tests/data/runs/stored-run"
OUTPUTS = ("verdict.json", "summary.md", "junit.xml")

pytestmark = pytest.mark.e2e


def _importtime(*code_or_args: str, cwd: Path = ROOT) -> tuple[int, set[str]]:
    """Run Python with ``-X importtime``; the exit code and every module it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *code_or_args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", proc.stderr, re.M))
    assert modules, proc.stderr[-2000:]
    return proc.returncode, modules


def _load_stack(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in {"locust", "gevent", "geventhttpclient"}}


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    run_dir = tmp_path / "stored-run"
    shutil.copytree(STORED, run_dir)
    for name in OUTPUTS:
        (run_dir / name).unlink()
    return run_dir


def test_evaluate_reproduces_the_stored_verdict_byte_for_byte(stored: Path) -> None:
    code, modules = _importtime("-m", "harness", "evaluate", str(stored))
    assert code == ExitCode.INCONCLUSIVE  # ttft-p99 and error-rate need more requests
    for name in OUTPUTS:
        assert (stored / name).read_bytes() == (STORED / name).read_bytes(), name
    assert not _load_stack(modules), sorted(_load_stack(modules))


def test_importing_the_cli_loads_no_load_generator() -> None:
    code, modules = _importtime("-c", "import harness.cli")
    assert code == 0
    assert "harness.cli" in modules
    assert not _load_stack(modules), sorted(_load_stack(modules))
    assert not {m for m in modules if m.startswith("harness.flows")}


def test_slo_rules_loads_no_load_generator(tmp_path: Path) -> None:
    out = tmp_path / "rules.yaml"
    code, modules = _importtime(
        "-m", "harness", "slo", "rules", "slo/runbook.yaml", "--out", str(out)
    )
    assert code == 0
    assert "ModelServingHighLatency" in out.read_text(encoding="utf-8")
    assert not _load_stack(modules), sorted(_load_stack(modules))
