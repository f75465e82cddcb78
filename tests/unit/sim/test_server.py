"""The simulator over HTTP, in its own process: formats, errors, faults, metrics, timing."""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import statistics
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sim_process import Sim, SimFactory, start_sim

from harness.sim.settings import SimSettings


@pytest.fixture
def sim_factory() -> Iterator[SimFactory]:
    """Start simulators with given arguments; each is stopped (and must exit 0) after."""
    started: list[Sim] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> Sim:
        sim = start_sim(*args, env=env)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        assert sim.stop() == 0, sim.stderr_text()
        assert "Traceback" not in sim.stderr_text()
        sim.stderr.close()


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    """A fast shared simulator: 2 ms steps."""
    server = start_sim("--step-base-ms", "2")
    yield server
    assert server.stop() == 0, server.stderr_text()
    server.stderr.close()


CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MESSAGES = [{"role": "user", "content": "Hello there, how are you?"}]
# BOS + (4 per message + 7 tokens) + 4 for the assistant header
CHAT_PROMPT_TOKENS = 1 + 4 + 7 + 4


def _payloads(lines: list[tuple[float, str]]) -> list[str]:
    assert all(line.startswith("data: ") for _, line in lines), lines
    return [line.removeprefix("data: ") for _, line in lines]


def _content_times(lines: list[tuple[float, str]], kind: str) -> list[float]:
    """Read times of the chunks that carry generated text."""
    times = []
    for t, line in lines:
        payload = line.removeprefix("data: ")
        if payload == "[DONE]":
            continue
        choices = json.loads(payload)["choices"]
        if choices and (
            choices[0]["delta"].get("content") if kind == "chat" else choices[0]["text"]
        ):
            times.append(t)
    return times


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples[name, frozenset(labels.items())]


def test_chat_stream_is_sse_like_vllm(sim: Sim) -> None:
    body = {
        "model": "sim-llama-3-8b",
        "messages": MESSAGES,
        "max_tokens": 5,
        "stream_options": {"include_usage": True},
    }
    payloads = _payloads(sim.stream(CHAT, body))
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(c["model"] == "sim-llama-3-8b" for c in chunks)
    role, *tokens, usage = chunks
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(tokens) == 5
    assert all(t["choices"][0]["delta"]["content"].strip() for t in tokens)
    assert [t["choices"][0]["finish_reason"] for t in tokens] == [None] * 4 + ["length"]
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": CHAT_PROMPT_TOKENS,
        "completion_tokens": 5,
        "total_tokens": CHAT_PROMPT_TOKENS + 5,
    }


def test_completion_stream_without_usage(sim: Sim) -> None:
    payloads = _payloads(sim.stream(COMPLETIONS, {"prompt": "Say hi", "max_tokens": 3}))
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 3  # no role chunk, no usage chunk
    assert all(c["object"] == "text_completion" for c in chunks)
    assert all(c["choices"][0]["text"].startswith(" ") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_non_streaming_bodies_and_defaults(sim: Sim) -> None:
    status, chat = sim.post(CHAT, {"messages": MESSAGES, "max_completion_tokens": 4})
    assert status == 200
    assert chat["object"] == "chat.completion"
    choice = chat["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 4
    assert choice["finish_reason"] == "length"
    assert chat["usage"]["completion_tokens"] == 4

    status, done = sim.post(COMPLETIONS, {"prompt": "one two three"})
    assert status == 200
    assert done["usage"] == {"prompt_tokens": 4, "completion_tokens": 64, "total_tokens": 68}
    assert len(done["choices"][0]["text"].split()) == 64


def test_models_and_health(sim: Sim) -> None:
    status, _, body = sim.request("GET", "/v1/models")
    assert status == 200
    models = json.loads(body)
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["sim-llama-3-8b"]
    assert sim.request("GET", "/health")[0] == 200


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"prompt": "word " * 4096}, 400, "maximum context length is 4096"),
        ({"prompt": "hi", "max_tokens": 5000}, 400, "too large: 5000"),
        ({"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ({"max_tokens": 3}, 400, "prompt"),
        ({"prompt": "hi", "model": "other"}, 404, "does not exist"),
    ],
)
def test_bad_requests(sim: Sim, body: dict[str, Any], status: int, needle: str) -> None:
    got, answer = sim.post(COMPLETIONS, body)
    assert got == status
    assert needle in answer["error"]["message"]
    assert answer["error"]["code"] == status


def test_api_key(sim_factory: SimFactory) -> None:
    settings = SimSettings(api_key=SecretStr("s3cret-key"))
    server = sim_factory(*settings.to_cli_args(), env=settings.to_cli_env())
    body = {"prompt": "hi", "max_tokens": 1}
    assert server.post(COMPLETIONS, body)[0] == 401
    assert server.post(COMPLETIONS, body, Authorization="Bearer wrong")[0] == 401
    assert server.post(COMPLETIONS, body, Authorization="Bearer s3cret-key")[0] == 200
    assert server.request("GET", "/v1/models")[0] == 401
    assert server.request("GET", "/health")[0] == 200
    assert server.request("GET", "/metrics")[0] == 200
    assert server.stop() == 0
    assert "s3cret-key" not in server.stderr_text()


def test_metrics_count_what_was_served(sim_factory: SimFactory) -> None:
    server = sim_factory("--step-base-ms", "2", "--max-model-len", "2048")
    prompt_tokens = generated = 0
    for n in (3, 5, 7):
        lines = server.stream(
            CHAT, {"messages": MESSAGES, "max_tokens": n, "stream_options": {"include_usage": True}}
        )
        usage = json.loads(_payloads(lines)[-2])["usage"]
        prompt_tokens += usage["prompt_tokens"]
        generated += usage["completion_tokens"]
    for n in (2, 4):
        status, body = server.post(COMPLETIONS, {"prompt": "a b c", "max_tokens": n})
        assert status == 200
        prompt_tokens += body["usage"]["prompt_tokens"]
        generated += body["usage"]["completion_tokens"]
    assert server.post(COMPLETIONS, {"prompt": "hi", "max_tokens": 9999})[0] == 400

    samples = _samples(server.metrics_text())
    engine = {"model_name": "sim-llama-3-8b", "engine": "0"}
    assert _value(samples, "vllm:request_success_total", finished_reason="length", **engine) == 5
    assert _value(samples, "vllm:request_success_total", finished_reason="abort", **engine) == 0
    assert _value(samples, "vllm:prompt_tokens_total", **engine) == prompt_tokens
    assert _value(samples, "vllm:generation_tokens_total", **engine) == generated
    assert _value(samples, "vllm:time_to_first_token_seconds_count", **engine) == 5
    assert _value(samples, "vllm:e2e_request_latency_seconds_count", **engine) == 5
    assert _value(samples, "vllm:inter_token_latency_seconds_count", **engine) == generated - 5
    assert _value(samples, "vllm:request_generation_tokens_sum", **engine) == generated
    assert _value(samples, "vllm:num_requests_running", **engine) == 0
    assert _value(samples, "vllm:kv_cache_usage_perc", **engine) == 0
    assert _value(samples, "vllm:num_preemptions_total", **engine) == 0
    # TTFT is at least one 2 ms step; buckets are vLLM's, and 2048 bounds token buckets.
    assert _value(samples, "vllm:time_to_first_token_seconds_bucket", le="0.001", **engine) == 0
    assert (
        "vllm:request_prompt_tokens_bucket",
        frozenset({**engine, "le": "2000.0"}.items()),
    ) in samples
    http = "http_requests_total"
    assert _value(samples, http, handler=CHAT, method="POST", status="2xx") == 3
    assert _value(samples, http, handler=COMPLETIONS, method="POST", status="2xx") == 2
    assert _value(samples, http, handler=COMPLETIONS, method="POST", status="4xx") == 1


def test_timing_follows_absolute_step_deadlines(sim_factory: SimFactory) -> None:
    server = sim_factory("--step-base-ms", "20", "--per-seq-ms", "0", "--prefill-per-token-ms", "0")
    server.stream(COMPLETIONS, {"prompt": "warm up", "max_tokens": 2})
    lines = server.stream(COMPLETIONS, {"prompt": "hello", "max_tokens": 40})
    times = _content_times(lines, "completion")
    assert len(times) == 40
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert abs(statistics.median(gaps) - 0.020) < 0.001
    # No drift: 39 gaps take 39 steps, however late any single wake-up was.
    assert abs((times[-1] - times[0]) - 39 * 0.020) < 0.005


# Faults: each knob at rate 1.0 on a sim with 2 ms steps, 10 tokens a request.
FAST = ("--step-base-ms", "2")


def test_fault_error(sim_factory: SimFactory) -> None:
    server = sim_factory(*FAST, "--error-rate", "1")
    status, body = server.post(CHAT, {"messages": MESSAGES, "max_tokens": 10})
    assert status == 500
    assert body["error"]["type"] == "InternalServerError"


def test_fault_rate_limit(sim_factory: SimFactory) -> None:
    server = sim_factory(*FAST, "--rate-limit-rate", "1", "--retry-after-seconds", "3")
    status, headers, _ = server.request("POST", CHAT, {"messages": MESSAGES})
    assert status == 429
    assert headers["Retry-After"] == "3"


def test_fault_stall(sim_factory: SimFactory) -> None:
    server = sim_factory(*FAST, "--stall-rate", "1", "--stall-ms", "300")
    lines = server.stream(CHAT, {"messages": MESSAGES, "max_tokens": 10})
    assert _payloads(lines)[-1] == "[DONE]"
    times = _content_times(lines, "chat")
    assert len(times) == 10
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    assert gaps[-1] >= 0.29  # one pause...
    assert gaps[-2] < 0.1  # ...only one


def test_fault_cut(sim_factory: SimFactory) -> None:
    server = sim_factory(*FAST, "--cut-rate", "1")
    conn = server.connect()
    conn.request(
        "POST", COMPLETIONS, body=json.dumps({"prompt": "hi", "max_tokens": 10, "stream": True})
    )
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        response.read()
    text = info.value.partial.decode()
    assert text.count("data: {") == 5
    assert "[DONE]" not in text
    conn.close()
    samples = _samples(server.metrics_text())
    engine = {"model_name": "sim-llama-3-8b", "engine": "0"}
    assert _value(samples, "vllm:request_success_total", finished_reason="abort", **engine) == 1


def test_fault_malformed(sim_factory: SimFactory) -> None:
    server = sim_factory(*FAST, "--malformed-rate", "1")
    payloads = _payloads(server.stream(COMPLETIONS, {"prompt": "hi", "max_tokens": 10}))
    assert payloads[-1] == "[DONE]"
    bad = []
    for p in payloads[:-1]:
        try:
            json.loads(p)
        except json.JSONDecodeError:
            bad.append(p)
    assert len(bad) == 1
    assert len(payloads) == 1 + 10 + 1


def test_fault_extra_ttft(sim_factory: SimFactory) -> None:
    server = sim_factory(*FAST, "--extra-ttft-ms", "200")
    start = time.monotonic()
    lines = server.stream(COMPLETIONS, {"prompt": "hi", "max_tokens": 2})
    assert _content_times(lines, "completion")[0] - start >= 0.2


def test_non_streaming_faults(sim_factory: SimFactory) -> None:
    body = {"prompt": "hi", "max_tokens": 4}
    cut = sim_factory(*FAST, "--cut-rate", "1")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        cut.request("POST", COMPLETIONS, body)
    malformed = sim_factory(*FAST, "--malformed-rate", "1")
    status, _, data = malformed.request("POST", COMPLETIONS, body)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)
    stall = sim_factory(*FAST, "--stall-rate", "1", "--stall-ms", "200")
    start = time.monotonic()
    assert stall.post(COMPLETIONS, body)[0] == 200
    assert time.monotonic() - start >= 0.2


def test_eos_probability_and_ignore_eos(sim_factory: SimFactory) -> None:
    server = sim_factory(*FAST, "--eos-probability", "1")
    payloads = _payloads(server.stream(CHAT, {"messages": MESSAGES, "max_tokens": 8}))
    final = json.loads(payloads[-2])["choices"][0]
    assert final == {
        "index": 0,
        "delta": {"content": ""},
        "logprobs": None,
        "finish_reason": "stop",
        "stop_reason": None,
    }
    status, body = server.post(COMPLETIONS, {"prompt": "hi", "max_tokens": 8, "ignore_eos": True})
    assert status == 200
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 8


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_it_cleanly_mid_stream(sig: signal.Signals) -> None:
    server = start_sim("--step-base-ms", "50")
    try:
        conn = server.connect()
        body = {"prompt": "hi", "max_tokens": 1000, "stream": True}
        conn.request("POST", COMPLETIONS, body=json.dumps(body))
        response = conn.getresponse()
        assert response.readline().startswith(b"data: ")
        server.proc.send_signal(sig)
        assert server.proc.wait(timeout=10) == 0
        assert "Traceback" not in server.stderr_text()
        conn.close()
    finally:
        server.stop()
        server.stderr.close()
