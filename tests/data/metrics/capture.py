"""Regenerate the real /metrics texts next to this file, the fixtures of the parser tests.

    .venv/bin/python tests/data/metrics/capture.py [vllm_sim|llamacpp|litellm ...]

Each server is started on loopback (the built-in simulator, llama.cpp's llama-server with
the tiny test model, the LiteLLM proxy in front of the simulator), sent a few requests,
and its exposition saved as served. Parser tests read these files, so they cover what the
real servers print, not what we believe they print.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for support.*

from support.litellm_proxy import litellm_proxy  # noqa: E402
from support.llama_server import llama_server  # noqa: E402
from support.tiny_gguf import write_tiny_llama  # noqa: E402

from harness.load.target import simulator  # noqa: E402

TIMEOUT_S = 30.0
MAX_LINES = 2000  # bounds each stream read


def _request(url: str, body: dict[str, Any] | None, headers: dict[str, str]) -> tuple[int, bytes]:
    """Status and body of a GET (no body) or JSON POST; an error status is returned, not raised.

    A streamed body is read line by line up to `[DONE]`, bounded in lines and time.
    """
    assert url.startswith("http://127.0.0.1:")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json", "Accept-Encoding": "identity", **headers},
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            if not (body or {}).get("stream"):
                return int(resp.status), bytes(resp.read())
            out, deadline = [], time.monotonic() + TIMEOUT_S
            for _ in range(MAX_LINES):
                line = resp.readline()
                out.append(line)
                if not line or line.strip() == b"data: [DONE]" or time.monotonic() > deadline:
                    break
            return int(resp.status), b"".join(out)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _chat(
    model: str, *, stream: bool = False, max_tokens: int = 16, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "tell me about the water in the sea"}],
        "max_tokens": max_tokens,
        **extra,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _first_model(base_url: str, headers: dict[str, str]) -> str:
    status, body = _request(f"{base_url}/models", None, headers)
    assert status == 200, body
    return str(json.loads(body)["data"][0]["id"])


def _save(name: str, text: str) -> None:
    path = HERE / name
    path.write_text(text)
    families = sum(1 for line in text.splitlines() if line.startswith("# TYPE "))
    print(f"{path.relative_to(HERE.parents[2])}: {len(text)} bytes, {families} families")


def capture_vllm_sim() -> None:
    """The simulator after 10 requests, half of them streamed."""
    with simulator({}) as url:
        model = _first_model(url, {})
        for i in range(10):
            status, _ = _request(f"{url}/chat/completions", _chat(model, stream=i % 2 == 1), {})
            assert status == 200
        status, body = _request(f"{url.removesuffix('/v1')}/metrics", None, {})
        assert status == 200
        _save("vllm_sim.txt", body.decode())


def capture_llamacpp() -> None:
    """llama-server (`--metrics`) serving the tiny model, after a few requests."""
    with tempfile.TemporaryDirectory() as tmp:
        model_path = write_tiny_llama(Path(tmp) / "tiny-llama.gguf")
        with llama_server(model_path) as url:
            for i in range(4):
                body = _chat("tiny-llama", stream=i % 2 == 1, ignore_eos=True)
                status, _ = _request(f"{url}/chat/completions", body, {})
                assert status == 200
            status, text = _request(f"{url.removesuffix('/v1')}/metrics", None, {})
            assert status == 200
            _save("llamacpp.txt", text.decode())


def capture_litellm() -> None:
    """The proxy in front of the simulator: streamed, non-streamed and two failed requests."""
    with simulator({}) as url, litellm_proxy(url) as proxy:
        auth = proxy.auth_headers
        model = _first_model(url, {})
        chat = f"{proxy.base_url}/chat/completions"
        for i in range(4):
            status, _ = _request(chat, _chat(model, stream=i % 2 == 1), auth)
            assert status == 200
        status, _ = _request(chat, _chat("no-such-model"), auth)  # backend answers 404
        assert status == 404, status
        status, _ = _request(chat, _chat(model, max_tokens=-1), auth)  # backend answers 400
        assert status == 400, status
        # Its callbacks run after the response: wait until all six are counted.
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            _, body = _request(proxy.metrics_url, None, {})
            text = body.decode()
            if _sum(text, "litellm_proxy_total_requests_metric_total") >= 6:
                break
            assert time.monotonic() < deadline, "litellm never counted the requests"
            time.sleep(0.2)
        _save("litellm.txt", text)


def _sum(text: str, sample: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((sample + "{", sample + " "))
    )


CAPTURES: dict[str, Callable[[], None]] = {
    "vllm_sim": capture_vllm_sim,
    "llamacpp": capture_llamacpp,
    "litellm": capture_litellm,
}


def main(argv: list[str]) -> None:
    for name in argv or list(CAPTURES):
        CAPTURES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
