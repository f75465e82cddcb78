"""The collectors' data in the judge's terms: server, gateway and GPU metrics beside the
client's, the policy's bounds worth an exact share, and the server-side summary for
verdict.json."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from harness.collectors.stored import StoredCollection
from harness.judge.analysis import RunMetrics
from harness.spec.metrics import METRICS


def with_collected(metrics: RunMetrics, collected: StoredCollection | None) -> RunMetrics:
    """The run's metrics with the collectors' data beside the client's."""
    if collected is None:
        missing = {
            name: "not collected in this run (no server.json)"
            for name, meta in METRICS.items()
            if meta.source != "client" and name not in metrics.samples
        }
        return replace(metrics, missing=MappingProxyType({**missing, **metrics.missing}))
    return replace(
        metrics,
        samples=MappingProxyType({**metrics.samples, **collected.series}),
        scalars=MappingProxyType({**metrics.scalars, **collected.scalars}),
        histograms=collected.histograms,
        missing=collected.missing,
    )


#: Client metrics and the server histograms that time the same span of a request.
PAIRED = {
    "ttft": ("server.ttft", "gateway.ttft"),
    "ttft_intended": ("server.ttft", "gateway.ttft"),
    "e2el": ("server.e2el", "gateway.e2el"),
    "e2el_intended": ("server.e2el", "gateway.e2el"),
    "itl": ("server.itl",),
    "tpot": ("server.tpot",),
}


def share_bounds(objectives: Iterable[Any]) -> dict[str, list[float]]:
    """Per server histogram, the policy's latency bounds worth reporting a share under:
    targets and alerts of objectives on that histogram or on its client counterpart."""
    out: dict[str, set[float]] = {}
    for obj in objectives:
        bounds = [b for b in (obj.target, obj.alert) if isinstance(b, float | int)]
        for hist in (obj.metric, *PAIRED.get(obj.metric, ())):
            if METRICS[hist].kind == "histogram":
                out.setdefault(hist, set()).update(float(b) for b in bounds)
    return {k: sorted(v) for k, v in out.items()}


def collected_summary(
    collected: StoredCollection | None, bounds: Mapping[str, list[float]] | None = None
) -> dict[str, Any] | None:
    """For verdict.json: each server read, the GPUs, and the measured window's server-side
    headline numbers (histogram buckets, exact shares under the policy's bounds, counters)."""
    if collected is None:
        return None
    histograms: dict[str, Any] = {}
    for name, hist in sorted(collected.histograms.items()):
        if hist.count <= 0:
            continue
        entry: dict[str, Any] = {"n": hist.count, "mean": hist.mean}
        for q in (0.5, 0.99):
            found = hist.quantile(q)
            if found is not None:
                entry[f"p{q * 100:g}_bucket"] = [found[1], found[2]]
        shares = {}
        for bound in (bounds or {}).get(name, []):
            share = hist.share_under(bound)
            if share is not None:
                shares[f"{bound:g}"] = {"share": share[0], "exact": share[1] == share[2],
                                        "between": [share[1], share[2]]}  # fmt: skip
        if shares:
            entry["share_under"] = shares
        histograms[name] = entry
    counters = {k: v for k, v in collected.measure.counters.items() if k != "server.preemptions"}
    return {
        "servers": [
            {
                "name": s.get("name"),
                "kind": s.get("kind"),
                "mode": s.get("mode"),
                "problems": s.get("problems") or {},
            }
            for s in collected.sources
        ],
        "gpu": {
            "available": bool(collected.gpu.get("available")),
            "reason": collected.gpu.get("reason"),
            "gpus": [g.get("name") for g in collected.gpu.get("gpus", [])],
        },
        "window_s": collected.measure.seconds if math.isfinite(collected.measure.seconds) else None,
        "histograms": histograms,
        "counters": counters,
        "scalars": {k: v for k, v in collected.scalars.items() if v is not None},
    }
