"""Building OpenAI-compatible requests (chat and completions, streaming or not)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from harness.records.redact import backend_name, safe_text
from harness.spec.scenario import Scenario
from harness.workload.base import RequestSpec


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to send: base URL parts, path, headers (the key stays in here only)."""

    base_url: str  # scheme://host:port
    path: str  # e.g. /v1/chat/completions
    headers: dict[str, str]
    api_key: str | None

    def redact(self, text: str, limit: int | None = None) -> str:
        """Text bound for logs, records or reports: the API key out, then clipped."""
        return safe_text(text, (self.api_key,), limit)


#: LiteLLM's response headers on which deployment answered, and what it attempted first:
#: the fallbacks (0 when the model group asked for served) and retries within that group.
API_BASE_HEADER = "x-litellm-model-api-base"
MODEL_ID_HEADER = "x-litellm-model-id"
FALLBACKS_HEADER = "x-litellm-attempted-fallbacks"
RETRIES_HEADER = "x-litellm-attempted-retries"


def gateway_route(header: Callable[[str], str | None]) -> tuple[str | None, int | None, int | None]:
    """(served_by, fallbacks, retries) from a response's headers, each None when absent.

    served_by is the api base without credentials or query (LiteLLM already drops the
    query), else the deployment id. Four header lookups, once per request.
    """
    base = header(API_BASE_HEADER) or header(MODEL_ID_HEADER)
    served_by = backend_name(base) if base else ""
    return served_by or None, _count(header(FALLBACKS_HEADER)), _count(header(RETRIES_HEADER))


def _count(value: str | None) -> int | None:
    """A header's non-negative integer, None when absent or anything else."""
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and len(value) < 10 else None


def split_base_url(url: str) -> tuple[str, str]:
    """("http://host:port", "/v1") from an OpenAI base URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")


def endpoint_for(scenario: Scenario, url: str) -> Endpoint:
    """The endpoint a scenario's requests go to; the key is read from the named variable."""
    base, prefix = split_base_url(url)
    route = "/chat/completions" if scenario.target.api == "chat" else "/completions"
    api_key = os.environ.get(scenario.target.api_key_env) or None
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if scenario.target.stream else "application/json",
        "Accept-Encoding": "identity",  # Locust asks for gzip by default; streams must not be
    }
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return Endpoint(base_url=base, path=prefix + route, headers=headers, api_key=api_key)


def request_body(scenario: Scenario, model: str, spec: RequestSpec) -> bytes:
    """The JSON body for one request: chat sends the whole history, completions its text."""
    wl = scenario.workload
    body: dict[str, object] = {
        "model": model,
        "max_tokens": spec.max_tokens,
        "temperature": wl.temperature,
        "stream": scenario.target.stream,
    }
    if scenario.target.api == "chat":
        body["messages"] = [{"role": role, "content": text} for role, text in spec.messages]
    else:
        body["prompt"] = spec.completion_prompt
    if wl.ignore_eos:
        body["ignore_eos"] = True  # vLLM and llama.cpp honour it; others ignore unknown keys
    if scenario.target.stream:
        body["stream_options"] = {"include_usage": True}
    try:
        return orjson.dumps(body)  # 1 µs against json.dumps's 10, once a request on the loop
    except orjson.JSONEncodeError:  # a lone surrogate (a dataset's "\\ud800"): JSON escapes it
        return json.dumps(body).encode()
