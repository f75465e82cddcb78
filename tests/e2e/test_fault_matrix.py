"""The fault matrix: `harness run` against a target failing one way at a time. No faulty target
passes; each case gives its exact exit code, decision and error class; and no piece of the API
key (which the faulty servers echo in their error bodies) reaches any output.

5 s at 8 req/s (about 40 requests), judged by tests/data/policies/quick.yaml (error rate
target 10 %, alert 20 %); the read timeout is 1 s so stalls are cut quickly."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.cli import only_run_dir, read_json, run_cli
from support.fault_server import fault_server
from support.secrets import key_pieces

from harness.errors import ExitCode

pytestmark = pytest.mark.e2e

BASE = "tests/data/scenarios/base.yaml"
KEY = "sk-fault-matrix-7f3a9c21e4"
SETS = (
    "load.warmup_s=0",
    "load.duration_s=5",
    "load.drain_timeout_s=5",
    "target.read_timeout_s=1",
    "target.request_timeout_s=10",
    "workload.max_tokens=8",
)

# mode: (exit code, decision, the error class most requests end with, or None)
CASES: dict[str, tuple[ExitCode, str, str | None]] = {
    "ok": (ExitCode.PASS, "PASS", None),  # the control: the matrix can pass a healthy target
    "every_500": (ExitCode.FAIL, "FAIL", "http_status"),
    "burst_503": (ExitCode.FAIL, "FAIL", "http_status"),
    "rate_limited": (ExitCode.FAIL, "FAIL", "http_status"),
    "cut_mid_stream": (ExitCode.FAIL, "FAIL", "broken_stream"),
    "reset": (ExitCode.FAIL, "FAIL", "connect"),
    "malformed_chunk": (ExitCode.FAIL, "FAIL", "malformed_chunk"),
    "error_in_stream": (ExitCode.FAIL, "FAIL", "broken_stream"),
    "stall_after_headers": (ExitCode.FAIL, "FAIL", "timeout"),
    "slow_headers": (ExitCode.FAIL, "FAIL", "timeout"),
    "no_content": (ExitCode.FAIL, "FAIL", "incomplete"),
    "no_done": (ExitCode.FAIL, "FAIL", "incomplete"),
    "html_502": (ExitCode.FAIL, "FAIL", "http_status"),
    "dies_mid_run": (ExitCode.FAIL, "FAIL", "connect"),
    # Degraded, not failed: latency and errors are measured; token counts lack the server's
    # usage (the summary's token figures come from the chunks).
    "no_usage": (ExitCode.PASS, "PASS", None),
}


def assert_no_key_anywhere(out: str, folder: Path) -> None:
    assert not key_pieces(out, KEY), key_pieces(out, KEY)
    for path in folder.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert not key_pieces(text, KEY), (path.name, key_pieces(text, KEY))


@pytest.mark.parametrize("mode", CASES, ids=CASES)
def test_a_faulty_target_never_passes(tmp_path: Path, mode: str) -> None:
    code, decision, error_class = CASES[mode]
    sets = [arg for s in SETS for arg in ("--set", s)]
    with fault_server(mode) as server:
        proc = run_cli("run", BASE, "--target", server.url, "--out", str(tmp_path), *sets,
                       env={"OPENAI_API_KEY": KEY}, timeout=120)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    assert proc.returncode == code, out[-3000:]
    run_dir = only_run_dir(tmp_path)
    verdict = read_json(run_dir / "verdict.json")
    assert verdict["decision"] == decision, verdict["objectives"]
    classes = verdict["summary"]["error_classes"]
    if error_class is None:
        assert not classes
    else:
        assert max(classes, key=classes.get) == error_class, classes
    if mode == "no_usage":  # said, not hidden: every count is the chunks'
        summary = verdict["summary"]
        assert summary["output_tokens_from_chunks"] == summary["requests"] - summary["errors"]
        assert "came without usage" in (run_dir / "summary.md").read_text(encoding="utf-8")
    assert_no_key_anywhere(out, tmp_path)


def test_a_key_refused_only_on_completions_stops_before_the_load(tmp_path: Path) -> None:
    sets = [arg for s in SETS for arg in ("--set", s)]
    with fault_server("unauthorized_completions") as server:
        proc = run_cli("run", BASE, "--target", server.url, "--out", str(tmp_path), *sets,
                       env={"OPENAI_API_KEY": KEY})  # fmt: skip
        assert server.streamed == 0  # no load was sent
    out = proc.stdout + proc.stderr
    assert proc.returncode == ExitCode.USAGE, out
    assert "HTTP 401" in out
    assert "Traceback" not in out
    assert_no_key_anywhere(out, tmp_path)
