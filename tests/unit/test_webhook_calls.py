"""`harness webhook`'s two contracts without a server: which requests it refuses, with the one
line it answers, and which status each run outcome answers.

tests/data/flagger/rollout.json is the body Flagger POSTs to a pre-rollout or rollout webhook:
its CanaryWebhookPayload (pkg/apis/flagger/v1beta1/canary.go: name, namespace, phase,
checksum, metadata map[string]string) as Go's encoding/json writes it, the phase and the
checksum as in Flagger's docs/gitbook/usage/webhooks.md. event.json is what its event webhooks
send (CallEventWebhook in pkg/controller/webhook.go: eventMessage, eventType and timestamp
added to the metadata), refused here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import ConfigError, UsageError
from harness.flows.webhook import (
    BadCall,
    Call,
    Webhook,
    WebhookRequest,
    answer_from_run,
    parse_call,
)

DATA = Path(__file__).resolve().parents[1] / "data"
FLAGGER = DATA / "flagger"
BASE = DATA / "scenarios/base.yaml"


def body(metadata: dict[str, Any] | None = None, **fields: Any) -> bytes:
    doc = json.loads((FLAGGER / "rollout.json").read_bytes())
    if metadata is not None:
        doc["metadata"] = metadata
    doc.update(fields)
    return json.dumps(doc).encode()


def test_flaggers_rollout_body_is_read() -> None:
    call = parse_call((FLAGGER / "rollout.json").read_bytes(), {})
    assert call == Call("llama-chat", "serving", "Progressing", "85d557f47b",
                        "http://llama-chat-canary.serving:8000/v1")  # fmt: skip
    assert call.canary == "serving/llama-chat"


def test_an_event_webhooks_body_is_refused() -> None:
    with pytest.raises(BadCall) as refused:
        parse_call((FLAGGER / "event.json").read_bytes(), {})
    assert str(refused.value) == (
        "unknown metadata key(s) eventMessage, eventType, timestamp: only url and scenario are read"
    )


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (b"{not json", "the body is not JSON: Expecting property name enclosed in double quotes: "
                       "line 1 column 2 (char 1)"),
        (b"\xff", "the body is not JSON: 'utf-8' codec can't decode byte 0xff in position 0: "
                  "invalid start byte"),
        (b"[]", "the body is not a JSON object: expected Flagger's "
                "{name, namespace, phase, checksum, metadata}"),
        (body(name=None), "name and namespace are required: the canary's, as Flagger sends them"),
        (body(namespace="../etc"), "name and namespace must be Kubernetes object names"),
        (body(phase=3), "phase and checksum must be short strings of letters and digits"),
        (body(checksum="a\nforged"), "phase and checksum must be short strings of letters and "
                                      "digits"),
        (body({"url": 8000}), "metadata must map names to strings, as Flagger's does"),
        (body({"url": "http://h/v1", "to\nken": "x"}), "unknown metadata key(s) to?ken: only url "
                                                       "and scenario are read"),
        (body({}), "metadata.url is required: the canary's OpenAI base URL, "
                   "e.g. http://podinfo-canary.test:8000/v1"),
        (body({"url": "ftp://host/v1"}), "metadata.url: expected an http:// or https:// URL "
                                         "such as http://127.0.0.1:8000/v1"),
        (body({"url": "http://h/v1?key=1"}), "metadata.url: a base URL takes no ?query or "
                                             "#fragment: expected one such as "
                                             "http://127.0.0.1:8000/v1"),
        (body({"url": "http://user:sk-secret@h/v1"}), "metadata.url must not carry credentials: "
                                                      "the run reads its API key from its "
                                                      "environment"),
        (body({"url": "http://h/v1\nforged log line"}), "metadata.url must be printable ASCII "
                                                        "without spaces, at most 2048 long"),
        (body({"url": "http://h/v1", "scenario": "smoke"}),
         "metadata.scenario is refused: this webhook serves one scenario "
         "(start it with --scenarios DIR to offer a choice)"),
    ],
    ids=["json", "utf-8", "array", "no-name", "bad-namespace", "phase", "checksum",
         "metadata-values", "key", "no-url", "ftp", "query", "credentials", "newline",
         "scenario-without-choice"],
)  # fmt: skip
def test_a_bad_request_is_refused_in_one_line(sent: bytes, message: str) -> None:
    with pytest.raises(BadCall) as refused:
        parse_call(sent, {})
    assert str(refused.value) == message


def test_a_scenario_is_picked_by_name_among_those_offered_and_never_by_path() -> None:
    choices = {"smoke": Path("/s/smoke.yaml"), "smoke.yaml": Path("/s/smoke.yaml")}
    for name in ("smoke", "smoke.yaml"):
        assert parse_call(body({"url": "http://h/v1", "scenario": name}), choices).scenario == name
    for name in ("../smoke", "/s/smoke.yaml", "other", ""):
        with pytest.raises(BadCall, match=r"^metadata\.scenario must be one of: smoke$"):
            parse_call(body({"url": "http://h/v1", "scenario": name}), choices)


def test_with_allowed_hosts_a_call_targets_only_them() -> None:
    allowed = ("*.serving.svc.cluster.local", "127.0.0.1")
    for url in ("http://llm-canary.serving.svc.cluster.local/v1", "http://127.0.0.1:8000/v1",
                "https://LLM.Serving.svc.cluster.local:8443/openai/v1"):  # fmt: skip
        assert parse_call(body({"url": url}), {}, allowed).url == url
    for url, host in (("http://evil.example/v1", "evil.example"),
                      ("http://serving.svc.cluster.local.evil.example/v1",
                       "serving.svc.cluster.local.evil.example")):  # fmt: skip
        with pytest.raises(BadCall) as refused:
            parse_call(body({"url": url}), {}, allowed)
        assert str(refused.value) == f"metadata.url: host {host} is not one --allow-host names"


def test_a_set_api_key_needs_allowed_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit-test")
    with pytest.raises(UsageError, match=r"\$OPENAI_API_KEY is set.* give --allow-host"):
        Webhook.prepare(request(tmp_path, max_duration_s=5.0), print)
    Webhook.prepare(request(tmp_path, max_duration_s=5.0, allow_hosts=("*.svc",)), print)


def verdict(decision: str, *objectives: tuple[str, str], invalid: str | None = None) -> Any:
    return {
        "schema": 1, "decision": decision, "invalid_reason": invalid,
        "objectives": [{"name": n, "verdict": v, "reason": f"{n} reason"} for n, v in objectives],
        "summary": {"requests": 60, "errors": 30},
    }  # fmt: skip


def run_folder(tmp_path: Path, doc: Any | None, log: str = "") -> tuple[Path, Path]:
    call_dir = tmp_path / "call"
    run_dir = call_dir / "20250101T000000Z-base-abcd"
    run_dir.mkdir(parents=True)
    (call_dir / "run.log").write_text(log, encoding="utf-8")
    if doc is not None:
        (run_dir / "verdict.json").write_text(json.dumps(doc), encoding="utf-8")
    return call_dir, run_dir


@pytest.mark.parametrize(
    ("doc", "status", "text"),
    [
        (verdict("PASS", ("a", "PASS"), ("b", "PASS")), 200,
         "PASS: 2 objectives met (60 requests, 30 errors)"),
        (verdict("WARN", ("a", "PASS"), ("b", "WARN")), 200,
         "WARN: b: b reason (60 requests, 30 errors)"),
        (verdict("FAIL", ("a", "FAIL"), ("b", "PASS"), ("c", "FAIL")), 412,
         "FAIL: a: a reason; c: c reason (60 requests, 30 errors)"),
        (verdict("INCONCLUSIVE", ("a", "INCONCLUSIVE")), 422,
         "INCONCLUSIVE: a: a reason (60 requests, 30 errors)"),
        (verdict("INVALID", invalid="load generator saturated"), 424,
         "INVALID: load generator saturated (60 requests, 30 errors)"),
    ],
    ids=["pass", "warn", "fail", "inconclusive", "invalid"],
)  # fmt: skip
def test_each_decision_answers_its_status(tmp_path: Path, doc: Any, status: int, text: str) -> None:
    call_dir, run_dir = run_folder(tmp_path, doc)
    answer = answer_from_run(call_dir, 0, None)
    assert (answer.status, answer.text) == (status, f"{text}; run: {run_dir}")


def test_a_run_stopped_at_the_deadline_is_never_a_pass(tmp_path: Path) -> None:
    call_dir, run_dir = run_folder(tmp_path / "a", verdict("PASS", ("a", "PASS")))
    answer = answer_from_run(call_dir, 130, 20.0)
    assert answer.status == 424
    assert answer.text == ("the run did not finish within 20 s and was stopped; what it "
                           f"measured: PASS; run: {run_dir}")  # fmt: skip
    call_dir, run_dir = run_folder(tmp_path / "b", verdict("FAIL", ("slow", "FAIL")))
    answer = answer_from_run(call_dir, 130, 20.0)
    assert (answer.status, answer.text) == (412, "FAIL (stopped at the 20 s deadline): slow: "
                                                 f"slow reason; run: {run_dir}")  # fmt: skip
    call_dir, run_dir = run_folder(tmp_path / "c", None)
    answer = answer_from_run(call_dir, -9, 20.0)
    assert answer.status == 424


def test_a_run_without_a_verdict_answers_its_last_error(tmp_path: Path) -> None:
    log = "starting\nerror: the target answered 401 Unauthorized: check OPENAI_API_KEY\n"
    call_dir, run_dir = run_folder(tmp_path / "a", None, log)
    answer = answer_from_run(call_dir, 2, None)
    assert (answer.status, answer.text) == (
        424, "the run ended without a verdict (exit 2): error: the target answered 401 "
             f"Unauthorized: check OPENAI_API_KEY; run: {run_dir}")  # fmt: skip
    call_dir, run_dir = run_folder(tmp_path / "b", None, "internal error (a bug): KeyError\n")
    answer = answer_from_run(call_dir, 70, None)
    assert answer.status == 500
    assert answer.text.startswith("the run failed (exit 70) without a verdict: internal error")


def request(tmp_path: Path, **fields: Any) -> WebhookRequest:
    return WebhookRequest(scenario_file=BASE, out=tmp_path, **fields)


def test_a_run_that_cannot_answer_in_time_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    # base.yaml: 3 s of warm-up and 15 s measured; 10 s go to start, judge and answer.
    with pytest.raises(UsageError, match=r"its load lasts 18 s .* within --timeout 25 s"):
        Webhook.prepare(request(tmp_path, timeout_s=25.0), print)
    hook = Webhook.prepare(request(tmp_path, timeout_s=25.0, max_duration_s=5.0), print)
    (_, policy, sets) = hook.scenarios[None]
    assert sets == ("load.duration_s=5",)
    assert policy == (DATA / "policies/quick.yaml").resolve()
    assert hook.choices == {}


def test_every_offered_scenario_is_checked_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    offered = tmp_path / "scenarios"
    offered.mkdir()
    (offered / "smoke.yaml").write_text(BASE.read_text(encoding="utf-8"), encoding="utf-8")
    (offered / "notes.txt").write_text("not a scenario", encoding="utf-8")
    req = request(tmp_path, scenarios_dir=offered, max_duration_s=5.0,
                  policy_file=DATA / "policies/quick.yaml")  # fmt: skip
    hook = Webhook.prepare(req, print)
    assert sorted(hook.choices) == ["smoke", "smoke.yaml"]
    (offered / "broken.yaml").write_text("name: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.yaml"):
        Webhook.prepare(req, print)
