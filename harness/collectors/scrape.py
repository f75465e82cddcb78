"""Reading a server's ``/metrics`` page directly, when no Prometheus is named.

One ``Scraper`` per server: it fetches the page, parses it with prometheus_client's parser,
detects the server kind once if asked to, and returns a ``Snapshot``. Failures are counted
and the first one kept verbatim; they never raise into the sampling loop.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from harness.collectors.families import FAMILIES, ServerKind, detect_kind
from harness.collectors.snapshot import Snapshot, parse_exposition, snapshot_from_samples
from harness.records.redact import safe_text


@dataclass(slots=True)
class Scraper:
    """Scrapes one metrics page; ``kind`` None means: detect it from the first page."""

    name: str
    url: str
    kind: ServerKind | None
    selector: dict[str, str] = field(default_factory=dict)
    api_key_env: str | None = None
    timeout_s: float = 5.0
    ok: int = 0
    failed: int = 0
    first_error: str | None = None
    scrape_seconds: float = 0.0  # total time spent fetching and parsing (the agent's cost)

    def scrape(self) -> Snapshot | None:
        """One reading of the page, or None (the failure is counted and kept)."""
        started = time.perf_counter()
        try:
            text = self._fetch()
            wall = time.time()
            samples = parse_exposition(text)
            if self.kind is None:
                self.kind = detect_kind({name for name, _, _ in samples})
                if self.kind is None:
                    self._fail(
                        "the page has none of the vllm:*, llamacpp:*, litellm_* or "
                        "DCGM_FI_* metrics"
                    )
                    return None
            snap = snapshot_from_samples(wall, samples, FAMILIES[self.kind], self.selector)
        # Anything a broken server can cause (a reset mid-page, a non-HTTP answer, a page
        # that does not parse) is a failed scrape, never an exception in the sampling loop.
        except Exception as exc:
            key = os.environ.get(self.api_key_env) if self.api_key_env else None
            self._fail(safe_text(_describe(exc), (key,), 300))
            return None
        finally:
            self.scrape_seconds += time.perf_counter() - started
        self.ok += 1
        return snap

    def _fetch(self) -> str:
        req = urllib.request.Request(self.url, headers={"Accept": "text/plain"})
        if self.api_key_env and os.environ.get(self.api_key_env):
            req.add_header("Authorization", f"Bearer {os.environ[self.api_key_env]}")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            body: bytes = resp.read()
        return body.decode("utf-8")

    def _fail(self, message: str) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = message

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "kind": self.kind,
            "ok": self.ok,
            "failed": self.failed,
            "first_error": self.first_error,
            "scrape_seconds": round(self.scrape_seconds, 4),
        }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"unreachable: {exc.reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
