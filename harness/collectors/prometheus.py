"""Reading the servers' metrics from Prometheus after the run.

Pure apart from ``query``: the HTTP call is injected, so tests can drive the
reader with canned answers and production uses ``prometheus-api-client``. Every failure
(unreachable, slow, an error answer, NaN, no series) becomes a reason, never an exception
and never a zero: the objectives that need the data are then INCONCLUSIVE.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from harness.collectors.families import FAMILIES, Family, ServerKind, detect_kind
from harness.collectors.promql import family_query, label_matchers, quote
from harness.collectors.snapshot import Snapshot, snapshots_from_matrix
from harness.records.redact import safe_text


class PrometheusError(Exception):
    """A query that gave no usable answer; the message says why, for the verdict."""


class Query(Protocol):
    """The HTTP side: an instant query at ``time`` or a range query; returns ``result``."""

    def instant(self, promql: str, at: float) -> list[dict[str, Any]]: ...

    def range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]: ...


class ApiClientQuery:
    """``Query`` on prometheus-api-client, with no retries: a slow Prometheus fails fast."""

    def __init__(self, url: str, timeout_s: float, token: str | None = None) -> None:
        from prometheus_api_client import PrometheusConnect
        from urllib3.util.retry import Retry

        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._token = token
        self.url = url
        self.timeout = timeout_s
        self._prom = PrometheusConnect(
            url=url, headers=headers, disable_ssl=False, retry=Retry(total=0), timeout=timeout_s
        )

    def instant(self, promql: str, at: float) -> list[dict[str, Any]]:
        return self._call(lambda: self._prom.custom_query(promql, params={"time": at}))

    def range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._call(
            lambda: self._prom.custom_query_range(
                promql,
                start_time=datetime.fromtimestamp(start, UTC),
                end_time=datetime.fromtimestamp(end, UTC),
                step=f"{step:g}",  # seconds as a number: Prometheus refuses "0.5s"
            )
        )

    def _call(self, fn: Callable[[], Any]) -> list[dict[str, Any]]:
        try:
            result = fn()
        except Exception as exc:  # the client raises requests', urllib3's and its own types
            raise PrometheusError(_describe(exc, self.url, self._token)) from None
        if not isinstance(result, list):
            raise PrometheusError(f"Prometheus at {self.url} answered an unexpected shape")
        return result


def _describe(exc: BaseException, url: str, token: str | None = None) -> str:
    text = str(exc)
    name = type(exc).__name__
    if "Timeout" in name or "timed out" in text:
        return f"Prometheus at {url} did not answer in time"
    if "Connection" in name or "Max retries" in text:
        return f"Prometheus at {url} is unreachable"
    return f"Prometheus at {url} failed: {name}: {safe_text(text, (token,), 200)}"


@dataclass(slots=True)
class PrometheusRead:
    """What came back for one server: snapshots, the queries sent, and what went wrong."""

    kind: ServerKind | None
    snapshots: list[Snapshot] = field(default_factory=list)
    queries: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # metric (or "*") -> why missing
    notes: list[str] = field(default_factory=list)


def detect(query: Query, selector: Mapping[str, str], at: float) -> ServerKind | None:
    """Which kind of server the selector reaches, from the metric names Prometheus holds."""
    sel = label_matchers(selector)
    pattern = quote("vllm:.+|llamacpp:.+|litellm_.+|DCGM_FI_.+")
    vector = "{__name__=~" + pattern + ("," + sel if sel else "") + "}"
    result = query.instant(f"count by (__name__) ({vector})", at)
    return detect_kind({str(r.get("metric", {}).get("__name__", "")) for r in result})


def newest_sample(query: Query, families: Sequence[Family], selector: Mapping[str, str],
                  at: float) -> float | None:  # fmt: skip
    """The time of the newest scrape of the server (None: no series at all).

    ``timestamp()`` gives a sample's own time only when applied straight to a selector
    (on any function's result it gives the evaluation time), and dropping the name can
    collide two families; so it is asked of one series name at a time.
    """
    sel = label_matchers(selector)
    for fam in families:
        for name in fam.names:
            sample = f"{name}_count" if fam.type == "histogram" else name
            vector = "{__name__=" + quote(sample) + ("," + sel if sel else "") + "}"
            result = query.instant(f"max(timestamp({vector}))", at)
            if result:
                value = float(result[0]["value"][1])
                return value if math.isfinite(value) else None
    return None


def read(
    query: Query,
    kind: ServerKind | None,
    selector: Mapping[str, str],
    start: float,
    end: float,
    step: float,
    settle_s: float,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.time,
) -> PrometheusRead:
    """Range-query every family of the server over [start, end] once Prometheus has
    scraped past ``end`` (waiting up to ``settle_s``)."""
    out = PrometheusRead(kind)
    try:
        if kind is None:
            kind = detect(query, selector, now())
            out.kind = kind
            if kind is None:
                out.problems["*"] = (
                    "Prometheus holds no vllm:*, llamacpp:*, litellm_* or DCGM_FI_* series"
                    + (f" matching {label_matchers(selector)}" if selector else "")
                )
                return out
        families = FAMILIES[kind]
        deadline = now() + settle_s
        while True:
            newest = newest_sample(query, families, selector, now())
            # A scrape one interval past the end: servers that count a request after
            # answering it (LiteLLM's logging callbacks) have counted the last ones by then.
            if newest is not None and newest >= end + step:
                break
            if now() >= deadline:
                if newest is None:
                    where = f" matching {label_matchers(selector)}" if selector else ""
                    out.problems["*"] = (
                        f"Prometheus has no {kind} series{where} (waited {settle_s:g} s)"
                    )
                    return out
                out.notes.append(
                    f"Prometheus' newest {kind} sample is {newest - end:+.1f} s from the run's "
                    f"end, short of one interval past it (waited {settle_s:g} s): the last "
                    "requests may be missing from the server's counts"
                )
                break
            sleep(min(1.0, step))
        # A grid through ``end`` itself, reaching the newest sample (the run's last reading).
        first = end - math.ceil((end - start) / step) * step
        last = end + max(0, math.ceil(((newest or end) - end) / step)) * step
        results: dict[str, list[dict[str, Any]]] = {}
        for fam in families:
            promql = family_query(fam, selector)
            out.queries[fam.metric] = promql
            try:
                results[fam.metric] = query.range(promql, first, last, step)
            except PrometheusError as exc:
                out.problems[fam.metric] = str(exc)
        # The client rounds range bounds to whole seconds; the grid is what Prometheus uses.
        lo, hi = round(first), round(last)
        grid = [lo + i * step for i in range(int((hi - lo) / step + 1e-9) + 1)]
        out.snapshots = snapshots_from_matrix(results, families, grid)
        present = {m for snap in out.snapshots for m in snap.values}
        for fam in families:
            if fam.metric in present or fam.metric in out.problems:
                continue
            if any(_all_nan(series) for series in results.get(fam.metric, ())):
                out.problems[fam.metric] = f"Prometheus returned only NaN for {fam.names[0]}"
    except PrometheusError as exc:
        out.problems["*"] = str(exc)
    return out


def _all_nan(series: Mapping[str, Any]) -> bool:
    values = series.get("values", ())
    return bool(values) and all(math.isnan(float(v)) for _, v in values)
