"""`harness webhook` end to end, as Flagger calls it: the server in a process of its own, the
body Flagger POSTs (tests/data/flagger/rollout.json, its shape from Flagger's
CanaryWebhookPayload: see tests/unit/test_webhook_calls.py) with metadata.url pointed at simulators
that need an API key. A healthy canary answers 200 PASS while a second call for it is refused
(409); an erroring one 412 naming the failing objective; one whose streams stall is stopped at
the deadline and answered 424 within it; bad requests 400 in one line. The key is in no answer
and no log line."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.cli import HARNESS, ROOT, read_json
from support.proc import stop, tail
from support.secrets import key_pieces

from harness.load.target import simulator

pytestmark = pytest.mark.e2e

BASE = ROOT / "tests/data/scenarios/base.yaml"
POLICY = ROOT / "tests/data/policies/quick.yaml"
ROLLOUT = ROOT / "tests/data/flagger/rollout.json"
KEY = "sk-test-5f0c2e9a7d41b836"
TIMEOUT_S = 20  # the server's --timeout: its runs get 15 s, a quiet run takes about 9
# 3 s at 20 req/s: about 60 requests, enough for the quick policy's p90 and error rate
LOAD = ("load.warmup_s=1", "load.duration_s=3",
        "load.arrival={type: poisson, rate: 20, max_concurrency: 64}")  # fmt: skip


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    results: Path


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("webhook")
    offered = root / "scenarios"
    offered.mkdir()
    (offered / "smoke.yaml").write_text(BASE.read_text(encoding="utf-8"), encoding="utf-8")
    log = root / "server.log"
    sets = [arg for item in LOAD for arg in ("--set", item)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(HARNESS), "webhook", str(BASE), "--host", "127.0.0.1", "--port", "0",
             "--out", str(root / "results"), "--policy", str(POLICY), "--scenarios", str(offered),
             "--timeout", str(TIMEOUT_S), "--max-duration", "3", "--allow-host", "127.0.0.1",
             *sets],
            cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "OPENAI_API_KEY": KEY},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"listening on (http://127\.0\.0\.1:\d+)/", log.read_text())):
            assert proc.poll() is None, tail(log)
            assert time.monotonic() < deadline, tail(log)
            time.sleep(0.1)
        yield Server(found.group(1), log, root / "results")
    finally:
        stop(proc)
    assert "Traceback" not in log.read_text()


def send(url: str, data: bytes | None = None, method: str = "POST") -> tuple[int, str]:
    """Status and body of one request; an error status is an answer here, not an exception."""
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S + 10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def flagger_body(target: str, name: str = "llama-chat", **metadata: str) -> bytes:
    doc: dict[str, Any] = json.loads(ROLLOUT.read_bytes())
    doc["name"] = name
    doc["metadata"] = {**doc["metadata"], "url": target, **metadata}
    return json.dumps(doc).encode()


def run_dir_of(text: str) -> Path:
    found = re.search(r"; run: (\S+)$", text.strip())
    assert found, text
    return Path(found.group(1))


def no_key_in(*texts: str) -> None:
    for text in texts:
        assert not key_pieces(text, KEY), text


def test_a_healthy_canary_passes_and_a_second_call_for_it_is_refused(webhook: Server) -> None:
    with simulator({"api_key": KEY}) as target, concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(send, webhook.url + "/", flagger_body(target))
        deadline = time.monotonic() + 10
        while not list(webhook.results.glob("*-webhook-serving.llama-chat-*")):
            assert not first.done(), first.result()
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        second = send(webhook.url + "/", flagger_body(target))
        status, text = first.result()
    assert second == (409, "a run for serving/llama-chat is already going: this call is "
                           "refused, not queued\n")  # fmt: skip
    assert status == 200, text
    assert text.startswith("PASS: 3 objectives met (")
    run_dir = run_dir_of(text)
    assert read_json(run_dir / "verdict.json")["decision"] == "PASS"
    request = read_json(run_dir.parent / "request.json")
    assert (request["name"], request["phase"], request["url"]) == ("llama-chat", "Progressing",
                                                                   target)  # fmt: skip
    log = webhook.log.read_text()
    assert f"folder {run_dir.parent}" in log  # the folder is logged when the run starts
    no_key_in(text, log)


def test_a_failing_canary_names_its_objective_and_a_late_run_is_answered_in_time(
    webhook: Server,
) -> None:
    erroring = {"api_key": KEY, "error_rate": 0.5}
    stalled = {"api_key": KEY, "stall_rate": 1.0, "stall_s": 120}
    with simulator(erroring) as bad, simulator(stalled) as late, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:  # fmt: skip
        smoke = flagger_body(bad, "errors", scenario="smoke")
        failing = pool.submit(send, webhook.url + "/", smoke)
        started = time.monotonic()
        stopped = pool.submit(send, webhook.url + "/", flagger_body(late, "stalls"))
        status, text = failing.result()
        late_status, late_text = stopped.result()
        took = time.monotonic() - started
    assert status == 412, text
    assert text.startswith("FAIL: error-rate: error_rate "), text
    assert read_json(run_dir_of(text) / "verdict.json")["decision"] == "FAIL"
    assert late_status == 424, late_text
    assert late_text.startswith(f"the run did not finish within {TIMEOUT_S} s and was stopped")
    assert took < TIMEOUT_S + 1
    no_key_in(text, late_text, webhook.log.read_text())


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "text"),
    [
        ("POST", "/", b"{not json", 400, "the body is not JSON: Expecting property name enclosed "
                                         "in double quotes: line 1 column 2 (char 1)"),
        ("POST", "/", json.dumps({"name": "llama-chat", "namespace": "serving"}).encode(), 400,
         "metadata.url is required: the canary's OpenAI base URL, "
         "e.g. http://podinfo-canary.test:8000/v1"),
        ("POST", "/", flagger_body("ftp://127.0.0.1/v1"), 400,
         "metadata.url: expected an http:// or https:// URL such as http://127.0.0.1:8000/v1"),
        ("POST", "/", flagger_body("http://collector.example:80/v1"), 400,
         "metadata.url: host collector.example is not one --allow-host names"),
        ("POST", "/", flagger_body("http://127.0.0.1:9/v1", scenario="../policies/quick"), 400,
         "metadata.scenario must be one of: smoke"),
        ("POST", "/", (ROOT / "tests/data/flagger/event.json").read_bytes(), 400,
         "unknown metadata key(s) eventMessage, eventType, timestamp: only url and scenario "
         "are read"),
        ("POST", "/run", flagger_body("http://127.0.0.1:9/v1"), 404, "POST Flagger's payload to /"),
        ("GET", "/", None, 405, "GET is not served: Flagger POSTs its payload to /"),
        ("GET", "/healthz", None, 200, "ok"),
    ],
    ids=["json", "no-url", "ftp", "host", "scenario-path", "event-hook", "path", "method",
         "health"],
)  # fmt: skip
def test_a_bad_request_is_answered_at_once_in_one_line(
    webhook: Server, method: str, path: str, data: bytes | None, status: int, text: str
) -> None:
    started = time.monotonic()
    assert send(webhook.url + path, data, method) == (status, text + "\n")
    assert time.monotonic() - started < 2
