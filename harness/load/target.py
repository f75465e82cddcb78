"""Finding out what we are about to load: start the built-in simulator, or check a URL."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from harness.children import die_with_parent
from harness.errors import TargetUnreachable, UsageError
from harness.load.openai_api import Endpoint
from harness.sim.settings import SimSettings


@dataclass(frozen=True, slots=True)
class ResolvedTarget:
    """A reachable target and the model the run will ask for."""

    url: str  # OpenAI base URL, e.g. http://127.0.0.1:8000/v1
    model: str
    models: tuple[str, ...]
    kind: str  # "simulator" or "external"
    simulator: dict[str, Any] | None = None
    preflight: dict[str, Any] | None = None  # the test request's answer: status, seconds
    notes: tuple[str, ...] = ()  # warnings for the user and the manifest

    def manifest(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "models": list(self.models),
            "kind": self.kind,
            "simulator": self.simulator,
            "preflight": self.preflight,
        }


def list_models(url: str, endpoint: Endpoint, timeout_s: float) -> tuple[str, ...]:
    """GET /models; a refused key exits 2, no answer or an error status 4."""
    req = urllib.request.Request(url + "/models", headers=auth_only(endpoint.headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise UsageError(
                f"target {url} refused the API key: HTTP {exc.code} to GET /models: "
                f"{_answer(exc, endpoint)} (check the variable target.api_key_env names)"
            ) from None
        raise TargetUnreachable(f"target {url} answered HTTP {exc.code} to GET /models") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TargetUnreachable(
            f"target {url} is unreachable: {endpoint.redact(str(reason), 300)}"
        ) from None
    try:
        data = json.loads(body)
        return tuple(str(m["id"]) for m in data["data"])
    except (ValueError, KeyError, TypeError):
        raise TargetUnreachable(
            f"target {url}: GET /models did not return an OpenAI model list"
        ) from None


#: The preflight request's text.
PREFLIGHT_TEXT = "Hello"


def auth_only(headers: dict[str, str]) -> dict[str, str]:
    """The credentials among an endpoint's headers (what a side request to the target needs)."""
    return {k: v for k, v in headers.items() if k.lower() == "authorization"}


def _answer(exc: urllib.error.HTTPError, endpoint: Endpoint) -> str:
    """What the target said with an error status: its body, without the key, kept short."""
    try:
        body = exc.read(2048).decode("utf-8", "replace")
    except OSError:
        body = ""
    return endpoint.redact(" ".join(body.split()) or str(exc.reason), 300)


def preflight(
    url: str, endpoint: Endpoint, model: str, api: str, timeout_s: float, text: str = PREFLIGHT_TEXT
) -> dict[str, Any]:
    """One small request with the scenario's model, API and key before any load, so that a
    wrong key or model stops the run with the target's answer (exit 2) instead of a full
    load of errors that CI would read as a failed canary. 5xx and 429 answers do not stop
    it: the load measures those, and a target that fails is a failed canary."""
    content: dict[str, Any] = (
        {"messages": [{"role": "user", "content": text}]} if api == "chat" else {"prompt": text}
    )
    body = json.dumps({"model": model, "max_tokens": 1, "stream": False, **content}).encode()
    headers = {**auth_only(endpoint.headers), "Content-Type": "application/json",
               "Accept": "application/json"}  # fmt: skip
    req = urllib.request.Request(endpoint.base_url + endpoint.path, data=body, headers=headers,
                                 method="POST")  # fmt: skip
    started = time.monotonic()
    answer = b""
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            answer = resp.read()
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        said = _answer(exc, endpoint)
        where = f"target {url} answered HTTP {status} to a test request for model {model!r}"
        if status in (401, 403):
            raise UsageError(
                f"{where}: {said} (check the API key variable target.api_key_env names)"
            ) from None
        if status == 404 or (status == 400 and "model" in said.lower()):
            raise UsageError(f"{where}: {said}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TargetUnreachable(
            f"target {url} did not answer a test request: {endpoint.redact(str(reason), 300)}"
        ) from None
    out: dict[str, Any] = {"status": status, "seconds": round(time.monotonic() - started, 3)}
    if status == 200:
        out["prompt_tokens"] = _prompt_tokens(answer)
    return out


def _prompt_tokens(body: bytes) -> int | None:
    """usage.prompt_tokens of a JSON answer, when it has one."""
    try:
        usage = json.loads(body).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    count = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def resolve(
    url: str,
    endpoint: Endpoint,
    model: str | None,
    timeout_s: float,
    api: str = "chat",
    read_timeout_s: float = 300.0,
    kind: str = "external",
    simulator: dict[str, Any] | None = None,
) -> ResolvedTarget:
    """Check the target answers, pick the model (the one it lists, when none is named) and
    send it one test request."""
    models = list_models(url, endpoint, timeout_s)
    notes: list[str] = []
    if model is None:
        if len(models) != 1:
            listed = ", ".join(models[:5]) + (
                f" and {len(models) - 5} more" if len(models) > 5 else ""
            )
            what = f"lists {len(models)} models ({listed})" if models else "lists no models"
            raise UsageError(f"target {url} {what}: name one with --model or target.model")
        model = models[0]
    elif model not in models:
        # Gateways route names they do not list (LiteLLM wildcards); an engine answers 404,
        # which the test request below turns into an error.
        notes.append(f"model {model!r} is not in the target's model list; it answered a test "
                     "request, so a gateway route serves it")  # fmt: skip
    check = preflight(url, endpoint, model, api, read_timeout_s)
    return ResolvedTarget(url=url, model=model, models=models, kind=kind, simulator=simulator,
                          preflight=check, notes=tuple(notes))  # fmt: skip


@contextlib.contextmanager
def simulator(settings: dict[str, Any], start_timeout_s: float = 20.0) -> Iterator[str]:
    """Run `harness sim` in a child process on a free loopback port; yield its base URL."""
    sim = SimSettings.model_validate({**settings, "port": 0, "host": "127.0.0.1"})
    # stderr goes to a file: an unread pipe would fill and stall the simulator mid-run.
    log = tempfile.TemporaryFile(mode="w+", prefix="harness-sim-")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.sim", *sim.to_cli_args()],
        preexec_fn=die_with_parent,
        # Its own session: a terminal's Ctrl-C reaches the harness, which stops the load in
        # order, and not the simulator, which would break the streams still in flight.
        start_new_session=True,
        env={**os.environ, **sim.to_cli_env()},  # the key travels in the environment only
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        port = _await_listening(proc, log, start_timeout_s)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        log.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _await_listening(proc: subprocess.Popen[str], log: Any, timeout_s: float) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=5)
            log.seek(0)
            err = log.read()
            raise TargetUnreachable(f"the built-in simulator did not start: {err.strip()[-400:]}")
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "listening":
            return int(event["port"])
    raise TargetUnreachable(f"the built-in simulator did not start within {timeout_s:g} s")
