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
from support.tiny_gguf import project_texts, train_bpe_tokenizer

from harness.errors import ExitCode
from harness.records.log import read_frame

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


def test_replies_without_usage_are_counted_by_a_local_tokenizer(tmp_path: Path) -> None:
    """No usage from the server, but a tokenizer.json in the scenario: every successful reply's
    output tokens are its text's count under that tokenizer, and the summary says so."""
    tokenizer = train_bpe_tokenizer(project_texts())
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    sets = [arg for s in SETS for arg in ("--set", s)]
    out = tmp_path / "out"
    with fault_server("no_usage") as server:
        proc = run_cli("run", BASE, "--target", server.url, "--out", str(out), *sets,
                       "--set", f"workload.tokenizer={tmp_path / 'tokenizer.json'}",
                       env={"OPENAI_API_KEY": KEY}, timeout=120)  # fmt: skip
        tokens = server.tokens
    assert proc.returncode == ExitCode.PASS, (proc.stdout + proc.stderr)[-3000:]
    run_dir = only_run_dir(out)
    summary = read_json(run_dir / "verdict.json")["summary"]
    assert summary["output_tokens_from_tokenizer"] == summary["requests"] - summary["errors"] > 0
    assert "output_tokens_from_chunks" not in summary
    reply = "".join(f"t{i} " for i in range(tokens))  # what the fault server streams
    expected = len(tokenizer.encode(reply, add_special_tokens=False).ids)
    assert expected != tokens  # the tokenizer's count, not the chunks'
    frame = read_frame(run_dir)
    measured = frame[frame["phase"] == "measure"]
    assert set(measured["output_tokens"]) == {expected}
    assert measured["output_counted"].all()
    text = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "the workload's tokenizer counted their text" in text
