"""Start the real LiteLLM proxy on loopback, in front of any OpenAI-compatible backend.

LiteLLM pins many packages, so it lives in its own venv (`.venv-litellm`, made by
`.ci/run`) and runs as a separate process. With the `prometheus` callback it exposes
`litellm_*` metric families, the gateway-side view the harness compares against the
engine's own metrics.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from support.proc import die_with_parent, free_port, stop, tail

LITELLM_ENV = "HARNESS_LITELLM"
"""Path of a `litellm` executable to use instead of `<repo>/.venv-litellm/bin/litellm`."""
REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
DEFAULT_MASTER_KEY = "sk-test-harness-master-key"


class LitellmError(RuntimeError):
    """The LiteLLM proxy could not be found or did not become ready."""


@dataclass(frozen=True, slots=True)
class LitellmHandle:
    """A running proxy. Clients send `Authorization: Bearer <master_key>`."""

    base_url: str  # "http://127.0.0.1:PORT/v1"
    root: str  # "http://127.0.0.1:PORT"
    port: int
    master_key: str
    metrics_url: str  # after the 307 from /metrics: "http://127.0.0.1:PORT/metrics/"
    log_path: Path

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}


@functools.cache
def litellm_binary() -> Path | None:
    """`$HARNESS_LITELLM`, else the repo's `.venv-litellm`, else `litellm` on PATH."""
    candidates: list[str | None] = [
        os.environ.get(LITELLM_ENV),
        str(REPO / ".venv-litellm" / "bin" / "litellm"),
        shutil.which("litellm"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    return None


def litellm_available() -> bool:
    """True if a `litellm` executable was found (see `LITELLM_ENV`)."""
    return litellm_binary() is not None


def proxy_config(
    backend_base_url: str,
    master_key: str,
    *,
    backend_api_key: str = "unused",
    metrics_auth: bool = False,
) -> dict[str, Any]:
    """Every model name passes through to the backend; Prometheus callback on.

    `require_auth_for_metrics_endpoint` is a *litellm_settings* key (it sets a module
    attribute) and defaults to True in 1.108: without it /metrics answers 401.
    """
    return {
        "model_list": [
            {
                "model_name": "*",
                "litellm_params": {
                    "model": "openai/*",
                    "api_base": backend_base_url,
                    "api_key": backend_api_key,  # the openai provider refuses to run without one
                },
            }
        ],
        "litellm_settings": {
            "callbacks": ["prometheus"],
            "require_auth_for_metrics_endpoint": metrics_auth,
        },
        "general_settings": {"master_key": master_key},
    }


def fallback_config(primary_url: str, fallback_url: str, master_key: str) -> dict[str, Any]:
    """Two model groups on two backends: `primary`, falling back to `fallback` when it fails.

    No retries, so a failing primary costs one attempt before the fallback serves. Both
    groups ask their backend for the simulator's model name.
    """

    def group(name: str, url: str) -> dict[str, Any]:
        params = {"model": "openai/sim-llama-3-8b", "api_base": url, "api_key": "unused"}
        return {"model_name": name, "litellm_params": params}

    return {
        "model_list": [group("primary", primary_url), group("fallback", fallback_url)],
        "router_settings": {"fallbacks": [{"primary": ["fallback"]}], "num_retries": 0},
        "litellm_settings": {
            "num_retries": 0,
            "callbacks": ["prometheus"],
            "require_auth_for_metrics_endpoint": False,
        },
        "general_settings": {"master_key": master_key},
    }


@contextlib.contextmanager
def litellm_proxy(
    backend_base_url: str,
    master_key: str = DEFAULT_MASTER_KEY,
    *,
    backend_api_key: str = "unused",
    metrics_auth: bool = False,
) -> Iterator[LitellmHandle]:
    """Run the proxy on a free 127.0.0.1 port routing to `backend_base_url` (`.../v1`).

    Start-up takes 5-10 s (mostly imports); the tail of its log is in the error raised if
    it exits or is not live within 60 s. `metrics_auth=True` keeps /metrics behind the
    master key, as in a default deployment.
    """
    cfg = proxy_config(
        backend_base_url, master_key, backend_api_key=backend_api_key, metrics_auth=metrics_auth
    )
    with litellm_with_config(cfg, master_key, metrics_auth=metrics_auth) as handle:
        yield handle


@contextlib.contextmanager
def litellm_with_config(
    cfg: dict[str, Any], master_key: str, *, metrics_auth: bool = False
) -> Iterator[LitellmHandle]:
    """Run the proxy with a whole config (e.g. `fallback_config`); every backend on loopback."""
    for model in cfg.get("model_list", []):
        api_base = str(model["litellm_params"].get("api_base", ""))
        if not api_base.startswith("http://127.0.0.1:"):
            raise ValueError(f"tests route to loopback backends only, not {api_base!r}")
    binary = litellm_binary()
    if binary is None:
        raise LitellmError(
            f"litellm not found: run .ci/run (makes .venv-litellm) or set {LITELLM_ENV}"
        )
    with tempfile.TemporaryDirectory(prefix="litellm-") as tmp:
        work = Path(tmp)
        config, log = work / "config.yaml", work / "litellm.log"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        port = free_port()
        cmd = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        env = {
            **os.environ,
            # Otherwise it first tries to download a price list from GitHub.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            # A model name with "llama-3" in it makes it fetch a tokenizer from the Hub
            # (5 retries, ~30 s, before the first byte of a stream); offline it falls back
            # to its bundled tiktoken at once.
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        env.pop("DATABASE_URL", None)  # a stray DB URL would make it try to connect
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=work,  # any file it drops lands in the temporary dir
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # stop() signals the whole group
                preexec_fn=die_with_parent,
            )
        try:
            root = f"http://127.0.0.1:{port}"
            _await_live(proc, f"{root}/health/liveliness", log)
            headers = {"Authorization": f"Bearer {master_key}"} if metrics_auth else {}
            metrics_url = _final_url(f"{root}/metrics", headers, log)
            yield LitellmHandle(
                base_url=f"{root}/v1",
                root=root,
                port=port,
                master_key=master_key,
                metrics_url=metrics_url,
                log_path=log,
            )
        finally:
            stop(proc, group=True)


def _await_live(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise LitellmError(f"litellm exited with {proc.returncode}; log tail:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return
        except (OSError, TimeoutError):
            pass  # not listening yet (HTTPError is an OSError too)
        if time.monotonic() > deadline:
            raise LitellmError(
                f"litellm not live after {START_TIMEOUT_S:.0f} s; log tail:\n{tail(log)}"
            )
        time.sleep(0.2)


def _final_url(url: str, headers: dict[str, str], log: Path) -> str:
    """Where /metrics ends up: it answers 307 to /metrics/, which Prometheus should scrape."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10.0) as resp:
            final: str = resp.geturl()
            return final
    except (OSError, TimeoutError) as exc:
        raise LitellmError(f"GET {url} failed: {exc}; log tail:\n{tail(log)}") from None
