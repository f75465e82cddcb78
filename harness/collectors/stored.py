"""What the collectors measured, read back from a run folder into the judge's terms.

``server.json`` holds each server's deltas over the measured window and the whole run;
``samples.parquet`` holds the time series (GPU samples, server gauges). This module turns
them into series values, histograms and scalars keyed by the metric names of
``harness.spec.metrics``, and says for every collected metric without data why it has none, so the
judge can call it INCONCLUSIVE with a reason instead of reading a zero.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.collectors.families import FAMILIES, ServerKind
from harness.collectors.nvml import energy_joules
from harness.collectors.series import SAMPLES_PARQUET, Point
from harness.collectors.session import SAMPLE_SCHEMA, SERVER_NAME
from harness.collectors.window import HistogramWindow, Window
from harness.errors import ResultsError
from harness.records.run_dir import Manifest
from harness.spec.metrics import METRICS

FloatArray = npt.NDArray[np.float64]

#: Scalars derived from counters: metric -> (family, how)
_COUNTER_SCALARS = {
    "server.generation_token_rate": "server.generation_tokens",
    "server.prompt_token_rate": "server.prompt_tokens",
    "server.preemptions": "server.preemptions",
    "gateway.fallbacks": "gateway.fallbacks",
}
_RATES = ("server.generation_token_rate", "server.prompt_token_rate")


@dataclass(frozen=True, slots=True)
class StoredCollection:
    """Collector data of one run, over its measured window unless named ``run``."""

    series: Mapping[str, FloatArray]
    histograms: Mapping[str, HistogramWindow]
    scalars: Mapping[str, float | None]
    missing: Mapping[str, str]
    measure: Window
    run: Window
    gpu: Mapping[str, Any]
    sources: tuple[Mapping[str, Any], ...]
    tolerance: float


def _window(sources: list[dict[str, Any]], name: str) -> Window:
    """One window of every source merged: the first source to have a metric gives it."""
    spans = [w for w in ((s.get("windows") or {}).get(name) for s in sources) if w]
    start, end = (float(spans[-1]["start"]), float(spans[-1]["end"])) if spans else (math.nan,) * 2
    out = Window(start, end, None, None)
    for data in spans:
        for metric, hist in data.get("histograms", {}).items():
            out.histograms.setdefault(metric, HistogramWindow.from_json(hist))
        for metric, by in data.get("counters", {}).items():
            out.counters.setdefault(metric, {k: float(v) for k, v in by.items()})
        for metric, why in data.get("missing", {}).items():
            out.missing.setdefault(metric, str(why))
    return out


def read_collection(run_dir: Path, manifest: Manifest) -> StoredCollection | None:
    """The collectors' data of a run folder, or None when the run collected nothing; a
    damaged server.json or samples.parquet exits 2 naming the file."""
    try:
        return _read_collection(run_dir, manifest)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ResultsError(
            f"{run_dir / SERVER_NAME}: damaged ({type(exc).__name__}: {exc})"
        ) from None


def _read_collection(run_dir: Path, manifest: Manifest) -> StoredCollection | None:
    doc = read_server(run_dir)
    if doc is None:
        return None
    sources: list[dict[str, Any]] = list(doc.get("sources", []))
    measure, run = _window(sources, "measure"), _window(sources, "run")
    missing: dict[str, str] = {}
    kinds: set[str] = set()
    for src in sources:
        problems = src.get("problems") or {}
        kind = src.get("kind")
        if kind:
            kinds.add(kind)
        prefix = f"{src.get('name')}: " if len(sources) > 1 else ""
        if "*" in problems:
            # An unknown kind could have been any engine or gateway; GPUs keep their own reason.
            kinds_of: list[ServerKind] = [kind] if kind else ["vllm", "llamacpp", "litellm"]
            metrics_of = [f.metric for k in kinds_of for f in FAMILIES[k]]
            for metric in metrics_of:
                missing.setdefault(metric, prefix + problems["*"])
        for metric, why in problems.items():
            if metric != "*":
                missing.setdefault(metric, prefix + str(why))
    for metric, why in measure.missing.items():
        missing.setdefault(metric, why)

    inside = _measured_samples(run_dir, manifest)
    series = _series(inside)
    scalars: dict[str, float | None] = {}
    for metric, family in _COUNTER_SCALARS.items():
        total = measure.counter_total(family)
        if total is None:
            continue
        scalars[metric] = total / measure.seconds if metric in _RATES else total
    server_errors = _error_share(measure)
    if server_errors is not None:
        scalars["server.error_rate"] = server_errors
    gateway_errors = _gateway_error_share(measure)
    if gateway_errors is not None:
        scalars["gateway.error_rate"] = gateway_errors
    energy = _energy(inside)
    if energy is not None:
        scalars["gpu.energy"] = energy
    gpu = dict(doc.get("gpu") or {})
    gpu_reason = _gpu_reason(gpu, kinds)
    for name, meta in METRICS.items():
        if meta.source == "client" or name in missing:
            continue
        if name in series or name in measure.histograms or name in scalars:
            continue
        if meta.source == "gpu":
            missing[name] = gpu_reason
        else:
            missing[name] = _not_exposed(name, kinds, sources)
    return StoredCollection(
        series=MappingProxyType(series),
        histograms=MappingProxyType(dict(measure.histograms)),
        scalars=MappingProxyType(scalars),
        missing=MappingProxyType(missing),
        measure=measure,
        run=run,
        gpu=gpu,
        sources=tuple(sources),
        tolerance=float(doc.get("tolerance", 0.02)),
    )


def _measured_samples(run_dir: Path, manifest: Manifest) -> pa.Table | None:
    """The run's time-series rows inside its measured window (None: none collected)."""
    table = read_samples(run_dir)
    tl = manifest.timeline
    if table.num_rows == 0 or tl is None:
        return None
    lo = tl.wall_start + (tl.measure_start - tl.t_start)
    hi = tl.wall_start + (tl.measure_end - tl.t_start)
    wall = table["wall"]
    return table.filter(pc.and_(pc.greater_equal(wall, lo), pc.less_equal(wall, hi)))


def _series(inside: pa.Table | None) -> dict[str, FloatArray]:
    """Each series metric's values inside the measured window, pooled over its series."""
    if inside is None:
        return {}
    out: dict[str, FloatArray] = {}
    metrics = inside["metric"].to_numpy(zero_copy_only=False)
    values = inside["value"].to_numpy(zero_copy_only=False).astype(np.float64)
    for name in np.unique(metrics):
        if str(name) in METRICS and METRICS[str(name)].kind == "distribution":
            picked = values[metrics == name]
            arr = picked[np.isfinite(picked)]
            arr.setflags(write=False)
            out[str(name)] = arr
    return out


def _energy(inside: pa.Table | None) -> float | None:
    """Joules over the measured window, summed over GPUs (last minus first reading each)."""
    if inside is None:
        return None
    rows = inside.filter(pc.equal(inside["metric"], "gpu.energy")).to_pylist()
    points = [
        Point(r["source"], r["metric"], f"{r['source']}:{r['series']}", r["wall"], r["value"])
        for r in rows
    ]
    per_gpu = energy_joules(points)
    return sum(per_gpu.values()) if per_gpu else None


def _share(by: Mapping[str, float] | None, bad: Callable[[str], bool]) -> float | None:
    """The share of a counter's increase under the keys ``bad`` picks; None if no increase."""
    total = sum(by.values()) if by else 0.0
    return sum(v for k, v in by.items() if bad(k)) / total if by and total > 0 else None


def _error_share(w: Window) -> float | None:
    """Non-2xx API answers, or else requests that finished aborted or in error."""
    if w.counters.get("server.http_requests"):
        return _share(w.counters["server.http_requests"], lambda k: not k.startswith("status=2"))
    return _share(
        w.counters.get("server.requests"),
        lambda k: k in ("finished_reason=abort", "finished_reason=error"),
    )


def _gateway_error_share(w: Window) -> float | None:
    return _share(w.counters.get("gateway.requests"), lambda k: not k.startswith("status_code=2"))


def _gpu_reason(gpu: Mapping[str, Any], kinds: set[str]) -> str:
    if "dcgm" in kinds:
        return "DCGM exposes no such series for the selected GPUs"
    reason = gpu.get("reason")
    if gpu.get("available"):
        return "the GPU did not report this metric (see manifest: collect.gpu.errors)"
    return str(reason or "no GPU metrics collected")


def _not_exposed(name: str, kinds: set[str], sources: list[dict[str, Any]]) -> str:
    wanted = "gateway (litellm)" if name.startswith("gateway.") else "engine (vllm or llamacpp)"
    if not sources:
        return f"no {wanted} metrics collected (collect.servers is empty)"
    if not kinds:
        return f"no {wanted} metrics: the server kind could not be determined"
    return f"{name} is not measured by a {'/'.join(sorted(kinds))} server"


def read_samples(run_dir: Path) -> pa.Table:
    """The run's time series (empty with the schema when none were collected)."""
    path = run_dir / SAMPLES_PARQUET
    if path.exists():
        try:
            return pq.read_table(path, schema=SAMPLE_SCHEMA)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ResultsError(f"{path}: unreadable samples file: {exc}") from None
    return SAMPLE_SCHEMA.empty_table()


def read_server(run_dir: Path) -> dict[str, Any] | None:
    """server.json (None when the run collected nothing); a damaged one exits 2 naming it."""
    path = run_dir / SERVER_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("sources", []), list):
        raise ResultsError(f"{path}: not a harness server.json (expected a mapping with sources)")
    return data
