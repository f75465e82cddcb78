"""Against a real llama.cpp server: the streaming, usage and metrics the harness relies on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.cli import assert_exit_matches_verdict

pytestmark = [pytest.mark.integration, pytest.mark.llama]

MAX_TOKENS = 16
MAX_LINES = 500  # bounds every read loop: 16 tokens make ~40 SSE lines
TIMEOUT_S = 30.0


def _post(url: str, body: dict[str, Any]) -> urllib.request.Request:
    assert url.startswith("http://127.0.0.1:")
    return urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept-Encoding": "identity"},
        method="POST",
    )


def _stream(url: str, body: dict[str, Any]) -> list[str]:
    """POST a streaming request; return the `data:` payloads in order, up to `[DONE]`."""
    payloads: list[str] = []
    deadline = time.monotonic() + TIMEOUT_S
    with urllib.request.urlopen(_post(url, body), timeout=TIMEOUT_S) as resp:
        assert resp.status == 200
        assert resp.headers.get_content_type() == "text/event-stream"
        for _ in range(MAX_LINES):
            assert time.monotonic() < deadline, "stream took too long"
            line = resp.readline()
            if not line:
                break
            text = line.decode().strip()
            if text.startswith("data:"):
                payloads.append(text.removeprefix("data:").strip())
                if payloads[-1] == "[DONE]":
                    break
    return payloads


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny-llama",
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
        **extra,
    }


def _check_stream(payloads: list[str], text_of: str) -> str:
    """Content chunks, then one usage chunk counting exactly MAX_TOKENS, then `[DONE]`."""
    assert payloads, "no data lines"
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert len(usage) == 1
    assert usage[0]["completion_tokens"] == MAX_TOKENS
    assert usage[0]["prompt_tokens"] > 0
    pieces: list[str] = []
    for c in chunks:
        for choice in c.get("choices") or []:
            if text_of == "delta":
                pieces.append(choice.get("delta", {}).get("content") or "")
            else:
                pieces.append(choice.get("text") or "")
    text = "".join(pieces)
    assert sum(1 for p in pieces if p) >= MAX_TOKENS // 2, "content was not streamed"
    assert text.strip()
    return text


def _tokens_predicted(llama_url: str) -> float:
    root = llama_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=TIMEOUT_S) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[-1])
    raise AssertionError("llamacpp:tokens_predicted_total missing from /metrics")


def test_chat_completions_stream_with_usage(llama_url: str) -> None:
    payloads = _stream(
        f"{llama_url}/chat/completions",
        _body(messages=[{"role": "user", "content": "tell me about the river"}]),
    )
    text = _check_stream(payloads, "delta")
    assert "<" not in text  # words only: special and byte tokens are never sampled


def test_completions_stream_with_usage(llama_url: str) -> None:
    payloads = _stream(f"{llama_url}/completions", _body(prompt="the water of the river"))
    _check_stream(payloads, "text")


def test_metrics_count_generated_tokens(llama_url: str) -> None:
    before = _tokens_predicted(llama_url)
    _stream(f"{llama_url}/completions", _body(prompt="one two three"))
    after = before
    for _ in range(40):  # the counter is updated as the slot is released, just after the reply
        after = _tokens_predicted(llama_url)
        if after >= before + MAX_TOKENS:
            break
        time.sleep(0.05)
    assert after - before == MAX_TOKENS


@pytest.mark.e2e
def test_cli_smoke_run_against_llama(llama_url: str, tmp_path: Path) -> None:
    """The real CLI, open loop against a real server: a valid run folder and a judged verdict."""
    harness = Path(sys.executable).parent / "harness"
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            str(harness), "run", str(root / "scenarios" / "smoke.yaml"),
            "--target", llama_url,
            "--set", "load.duration_s=5", "--set", "load.warmup_s=1",
            "--set", "load.arrival.rate=4",
            "--out", str(out),
        ],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    detail = f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    runs = [p for p in out.iterdir() if p.is_dir()]
    assert len(runs) == 1, detail
    # Pass, fail (tiny-model latency on a CPU may miss the runbook) or inconclusive, and the
    # exit code is exactly the decision's.
    assert_exit_matches_verdict(proc, runs[0])
    assert len(runs) == 1, detail
    run = runs[0]
    for name in ("manifest.json", "records.parquet", "verdict.json", "summary.md", "junit.xml"):
        assert (run / name).is_file(), f"{name} missing from {run}"
    summary = json.loads((run / "verdict.json").read_text())["summary"]
    assert summary["requests"] > 0
    assert summary["errors"] == 0
    assert summary["ttft_s"]["p50"] > 0
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["target"]["model"] == "tiny-llama"
