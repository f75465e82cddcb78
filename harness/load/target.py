"""Finding out what we are about to load: start the built-in simulator, or check a URL."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from harness.errors import TargetUnreachable
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

    def manifest(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "model": self.model,
            "models": list(self.models),
            "kind": self.kind,
            "simulator": self.simulator,
        }


def list_models(url: str, endpoint: Endpoint, timeout_s: float) -> tuple[str, ...]:
    """GET /models; a refusal or an error status means the run cannot start (exit 4)."""
    req = urllib.request.Request(url + "/models", headers=_auth_only(endpoint.headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        hint = ""
        if exc.code in (401, 403):
            hint = " (check the API key variable the scenario names in target.api_key_env)"
        raise TargetUnreachable(
            f"target {url} answered HTTP {exc.code} to GET /models{hint}"
        ) from None
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


def _auth_only(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() == "authorization"}


def resolve(
    url: str,
    endpoint: Endpoint,
    model: str | None,
    timeout_s: float,
    kind: str = "external",
    simulator: dict[str, Any] | None = None,
) -> ResolvedTarget:
    """Check the target answers and pick the model (explicit, else the first listed)."""
    models = list_models(url, endpoint, timeout_s)
    if model is None:
        if not models:
            raise TargetUnreachable(f"target {url} lists no models; name one with --model")
        model = models[0]
    return ResolvedTarget(url=url, model=model, models=models, kind=kind, simulator=simulator)


@contextlib.contextmanager
def simulator(settings: dict[str, Any], start_timeout_s: float = 20.0) -> Iterator[str]:
    """Run `harness sim` in a child process on a free loopback port; yield its base URL."""
    sim = SimSettings.model_validate({**settings, "port": 0, "host": "127.0.0.1"})
    # stderr goes to a file: an unread pipe would fill and stall the simulator mid-run.
    log = tempfile.TemporaryFile(mode="w+", prefix="harness-sim-")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.sim", *sim.to_cli_args()],
        preexec_fn=_die_with_parent,
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


def _die_with_parent() -> None:
    """In the child: ask Linux to send SIGTERM when the parent dies, so a killed run never
    leaves a simulator behind (a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


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
