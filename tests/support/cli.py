"""Running the `harness` console script as a user would, bounded in time."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HARNESS = Path(sys.executable).parent / "harness"


def run_cli(
    *args: str, timeout: float = 120.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `harness ARGS` from the repository root and capture its output."""
    return subprocess.run(
        [str(HARNESS), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def only_run_dir(out: Path) -> Path:
    """The single run folder under out."""
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


#: The exit code each decision gives (docs/architecture.md): a crash matches none of them.
DECISION_EXIT = {"PASS": 0, "WARN": 0, "FAIL": 1, "INCONCLUSIVE": 3, "INVALID": 4}


def assert_exit_matches_verdict(proc: subprocess.CompletedProcess[str], run_dir: Path) -> str:
    """The process exited with exactly the code of the decision it wrote; the decision.

    For runs whose decision depends on timing: the test cannot name the decision in advance,
    but a crash, or an exit code that disagrees with verdict.json, still fails it."""
    decision = str(read_json(run_dir / "verdict.json")["decision"])
    assert proc.returncode == DECISION_EXIT[decision], (decision, proc.stdout + proc.stderr)
    assert "Traceback" not in proc.stderr
    return decision


def simulator_requests(url: str) -> int:
    """Completion requests the built-in simulator at ``url`` finished or saw cut, from its
    own /metrics (vllm:request_success_total over every finish reason)."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.findall(r"^vllm:request_success_total\{[^}]*\} (\S+)$", text, re.M)
    return int(sum(float(v) for v in found))


def parse_args(args: list[str]) -> Any:
    """``harness ARGS`` as the real CLI parses them (a click.Context), without running it:
    manifests and workflows that call the CLI are checked against it."""
    from harness.cli import cli  # here: most tests that use this module never parse

    group_ctx = cli.make_context("harness", list(args), resilient_parsing=False)
    command = cli.get_command(group_ctx, args[0])
    assert command is not None, args[0]
    return command.make_context(args[0], list(args[1:]))
