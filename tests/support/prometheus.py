"""Start a real Prometheus (the Debian `prometheus` package) on loopback for tests.

The harness reads server metrics through PromQL, so tests run the real query engine
against real scrapes rather than a fake of its HTTP API. Prometheus 2.42 applies new
scrape targets on a fixed 5 s cycle: with a 1 s interval the first sample is queryable
after about 6 s, which is why `wait_for_series` exists.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support.proc import die_with_parent, free_port, stop, tail

READY_TIMEOUT_S = 20.0
PROMTOOL_TIMEOUT_S = 60.0
LIVE_RETENTION = "1h"
HISTORY_RETENTION = "3650d"
"""Retention on a caller's storage dir: synthetic history may span days and must survive."""


class PrometheusError(RuntimeError):
    """Prometheus or promtool is missing, failed, or did not become ready in time."""


@dataclass(frozen=True, slots=True)
class ScrapeTarget:
    """One scrape job: a loopback `host:port` plus how to scrape it."""

    job: str
    address: str  # "127.0.0.1:PORT"
    metrics_path: str = "/metrics"
    bearer_token: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_url(
        cls,
        job: str,
        url: str,
        *,
        bearer_token: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> ScrapeTarget:
        """A target from a full metrics URL; its query string becomes `params`."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname != "127.0.0.1" or parts.port is None:
            raise ValueError(f"tests scrape http://127.0.0.1:PORT only, not {url!r}")
        return cls(
            job=job,
            address=f"127.0.0.1:{parts.port}",
            metrics_path=parts.path or "/metrics",
            bearer_token=bearer_token,
            labels=dict(labels or {}),
            params=urllib.parse.parse_qs(parts.query),
        )

    def scrape_config(self) -> dict[str, Any]:
        static: dict[str, Any] = {"targets": [self.address]}
        if self.labels:
            static["labels"] = dict(self.labels)
        job: dict[str, Any] = {
            "job_name": self.job,
            "metrics_path": self.metrics_path,
            "static_configs": [static],
        }
        if self.bearer_token is not None:
            job["authorization"] = {"type": "Bearer", "credentials": self.bearer_token}
        if self.params:
            job["params"] = {k: list(v) for k, v in self.params.items()}
        return job


@dataclass(frozen=True, slots=True)
class PrometheusHandle:
    """A running Prometheus: where it listens and where its log goes."""

    url: str  # "http://127.0.0.1:PORT"
    port: int
    log_path: Path

    def query(self, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """One instant query; the `result` list. A rejected query raises at once."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"query {promql!r} rejected ({exc.code}): {detail}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_series(self, promql: str, timeout_s: float = 20.0) -> None:
        """Poll until `promql` returns a non-empty result (targets apply on a 5 s cycle)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.query(promql):
                    return
            except (urllib.error.URLError, OSError):
                pass  # a transient connection error: retry until the deadline
            if time.monotonic() > deadline:
                raise PrometheusError(
                    f"no series for {promql!r} after {timeout_s:.0f} s; "
                    f"targets: {self._targets_summary()}; log tail:\n{tail(self.log_path)}"
                )
            time.sleep(0.25)

    def _targets_summary(self) -> str:
        """Each target's health and last error: the usual reason a series never appears."""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=2.0) as resp:
                active = json.loads(resp.read())["data"]["activeTargets"]
        except (OSError, ValueError, KeyError):
            return "(unavailable)"
        return (
            "; ".join(
                f"{t.get('scrapeUrl')} {t.get('health')} {t.get('lastError', '')!r}" for t in active
            )
            or "(none active yet)"
        )


def prometheus_available() -> bool:
    """True if both `prometheus` and `promtool` are on PATH."""
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def _duration(seconds: float) -> str:
    """Prometheus duration syntax: integers with a unit, so 1.5 s is "1500ms"."""
    ms = round(seconds * 1000)
    if ms <= 0:
        raise ValueError(f"scrape interval must be positive, not {seconds}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def write_config(path: Path, targets: Sequence[ScrapeTarget], scrape_interval_s: float) -> None:
    """A prometheus.yml with one job per target; the timeout equals the interval."""
    interval = _duration(scrape_interval_s)
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": [t.scrape_config() for t in targets],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def tsdb_from_openmetrics(text: str, directory: Path) -> Path:
    """Turn OpenMetrics text (timestamps in seconds) into TSDB blocks under `directory`.

    A Prometheus started with `storage_dir=directory` can then `query_range` that history
    at once, with no waiting for scrapes. A missing `# EOF` line is added.
    """
    promtool = shutil.which("promtool")
    if promtool is None:
        raise PrometheusError("promtool not found: install the Debian package `prometheus`")
    if not text.rstrip().endswith("# EOF"):
        text = text.rstrip("\n") + "\n# EOF\n"
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".om", prefix="history-") as src:
        src.write(text)
        src.flush()
        done = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", src.name, str(directory)],
            capture_output=True,
            text=True,
            timeout=PROMTOOL_TIMEOUT_S,
            check=False,
        )
    if done.returncode != 0:
        raise PrometheusError(
            f"promtool create-blocks-from failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return directory


@contextlib.contextmanager
def prometheus_server(
    targets: Sequence[ScrapeTarget],
    scrape_interval_s: float = 1.0,
    *,
    storage_dir: Path | None = None,
    retention: str | None = None,
) -> Iterator[PrometheusHandle]:
    """Run Prometheus on a free 127.0.0.1 port scraping `targets`; always stop it.

    Storage is a temporary dir unless `storage_dir` is given (e.g. blocks written by
    `tsdb_from_openmetrics`). Retention defaults to 1 h on a temporary dir and ten years
    on a given one, so that old synthetic blocks are not deleted at start-up.
    """
    binary = shutil.which("prometheus")
    if binary is None:
        raise PrometheusError("prometheus not found: install the Debian package `prometheus`")
    if retention is None:
        retention = HISTORY_RETENTION if storage_dir is not None else LIVE_RETENTION
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        work = Path(tmp)
        config, log = work / "prometheus.yml", work / "prometheus.log"
        write_config(config, targets, scrape_interval_s)
        data = storage_dir if storage_dir is not None else work / "data"
        port = free_port()
        cmd = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--storage.tsdb.retention.time={retention}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--query.max-concurrency=4",
            "--log.level=info",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
        try:
            handle = PrometheusHandle(url=f"http://127.0.0.1:{port}", port=port, log_path=log)
            _await_ready(proc, f"{handle.url}/-/ready", log)
            yield handle
        finally:
            stop(proc)


def _await_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise PrometheusError(
                f"prometheus exited with {proc.returncode}; log tail:\n{tail(log)}"
            )
        if _status(url) == 200:
            return
        if time.monotonic() > deadline:
            raise PrometheusError(
                f"prometheus not ready after {READY_TIMEOUT_S:.0f} s; log tail:\n{tail(log)}"
            )
        time.sleep(0.05)


def _status(url: str) -> int:
    """HTTP status; 0 for a connection error so that polling retries."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, TimeoutError):
        return 0
