"""Server state at one instant, read the same way from a ``/metrics`` page or from Prometheus.

A ``Snapshot`` maps each canonical metric to its combined series at one wall-clock time:
histograms as ``le=<bound>`` / ``sum`` / ``count`` keys, counters and gauges by their
``series_key``. Every later step (window deltas, rates, gauge series) reads snapshots only, so
direct scraping and Prometheus give the same numbers from the same data.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.collectors.families import Family, series_key

Values = dict[str, dict[str, float]]  # metric -> key -> value


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Combined values of every family present at ``wall`` (time.time() seconds)."""

    wall: float
    values: Values
    names: dict[str, str] = field(default_factory=dict)  # metric -> server name it came from

    def to_json(self, source: str) -> dict[str, Any]:
        return {"source": source, "wall": self.wall, "values": self.values, "names": self.names}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(float(data["wall"]), dict(data["values"]), dict(data.get("names", {})))


def matcher(selector: Mapping[str, str]) -> list[tuple[str, re.Pattern[str] | str]]:
    """Label matchers from a scenario selector: ``value`` is exact, ``=~regex`` a regex."""
    out: list[tuple[str, re.Pattern[str] | str]] = []
    for label, value in sorted(selector.items()):
        if value.startswith("=~"):
            out.append((label, re.compile(value[2:])))
        else:
            out.append((label, value))
    return out


def _matches(labels: Mapping[str, str], rules: Sequence[tuple[str, re.Pattern[str] | str]]) -> bool:
    for label, rule in rules:
        got = labels.get(label, "")
        if isinstance(rule, str):
            if got != rule:
                return False
        elif rule.fullmatch(got) is None:
            return False
    return True


Sample = tuple[str, dict[str, str], float]  # exposition sample name, labels, value


def parse_exposition(text: str) -> list[Sample]:
    """Every sample of a Prometheus text page, via prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: list[Sample] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append((s.name, dict(s.labels), float(s.value)))
    return out


def snapshot_from_samples(
    wall: float,
    samples: Iterable[Sample],
    families: Sequence[Family],
    selector: Mapping[str, str] | None = None,
) -> Snapshot:
    """Combine a page's samples into a Snapshot, as the family's PromQL would (sum/max/none).

    NaN samples are left out (Prometheus' aggregations would propagate them; a NaN gauge
    must read as missing, never as a number).
    """
    by_name: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for name, labels, value in samples:
        by_name[name].append((labels, value))
    values: Values = {}
    names: dict[str, str] = {}
    for fam in families:
        found = next((n for n in fam.names if _has_finite(by_name, fam.sample_names(n))), None)
        if found is None:
            continue
        rules = matcher(fam.selector_for(selector or {}))
        fam_rules = rules + [(lab, re.compile(rx)) for lab, rx in fam.match]
        combined = _combine(fam, found, by_name, fam_rules)
        if combined:
            values[fam.metric] = combined
            names[fam.metric] = found
    return Snapshot(wall, values, names)


def _combine(
    fam: Family,
    name: str,
    by_name: Mapping[str, list[tuple[dict[str, str], float]]],
    rules: Sequence[tuple[str, re.Pattern[str] | str]],
) -> dict[str, float]:
    """Combine matching series as the family's PromQL does; a NaN (or infinite) input makes
    its output series NaN there, so it is left out here too (a histogram then entirely)."""
    out: dict[str, float] = {}
    poisoned: set[str] = set()

    def add(key: str, value: float, op: str) -> None:
        if not math.isfinite(value):
            poisoned.add(key)
        elif op == "max":
            out[key] = max(out.get(key, -math.inf), value)
        else:
            out[key] = out.get(key, 0.0) + value

    if fam.type == "histogram":
        for labels, value in by_name.get(f"{name}_bucket", ()):
            if _matches(labels, rules):
                add(f"le={_bound_key(labels.get('le', '+Inf'))}", value, "sum")
        for part in ("sum", "count"):
            for labels, value in by_name.get(f"{name}_{part}", ()):
                if _matches(labels, rules):
                    add(part, value, "sum")
        return {} if poisoned else out
    # combine "none" keeps one series per GPU; dcgm-exporter repeats a shared GPU's series
    # once per pod, which the PromQL's max by (GPU labels) reads once.
    op = "sum" if fam.combine == "sum" else "max"
    for labels, value in by_name.get(name, ()):
        if _matches(labels, rules):
            add(series_key(fam, labels), value * fam.scale, op)
    return {k: v for k, v in out.items() if k not in poisoned}


def _has_finite(
    by_name: Mapping[str, list[tuple[dict[str, str], float]]], names: Iterable[str]
) -> bool:
    """Whether any sample of these names is a number (a name only NaN is as good as absent)."""
    return any(math.isfinite(v) for n in names for _, v in by_name.get(n, ()))


def _bound_key(le: str) -> str:
    """A bucket bound written one way whatever the server wrote ("1", "1.0", "+Inf")."""
    try:
        bound = float(le)
    except ValueError:
        raise ValueError(f"bucket bound le={le!r} is not a number") from None
    return "+Inf" if math.isinf(bound) else repr(bound)


def snapshots_from_matrix(
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    families: Sequence[Family],
    grid: Iterable[float] = (),
) -> list[Snapshot]:
    """Snapshots from Prometheus range-query results, one per evaluation timestamp.

    ``results`` maps a family's metric to its query's ``result`` list (matrix), as built by
    ``promql.family_query``; series carry ``__name__`` (and ``le`` / ``by`` labels). Every
    ``grid`` time gets a snapshot even with no series: a counter whose labels a server
    creates on first use (LiteLLM's) has no series before it, which means zero.
    """
    by_time: dict[float, Values] = defaultdict(dict)
    for t in grid:
        by_time[float(t)] = {}
    names_at: dict[float, dict[str, str]] = defaultdict(dict)
    for fam in families:
        result = results.get(fam.metric)
        if not result:
            continue
        present = {str(s.get("metric", {}).get("__name__", "")) for s in result}
        found = next((n for n in fam.names if any(x in present for x in fam.sample_names(n))), None)
        if found is None:
            continue
        wanted = set(fam.sample_names(found))
        for series in result:
            labels = {str(k): str(v) for k, v in series.get("metric", {}).items()}
            sample_name = labels.get("__name__", "")
            if sample_name not in wanted:
                continue
            for ts, raw in series.get("values", ()):
                value = float(raw)
                if not (math.isfinite(value) or (value == math.inf and fam.type == "histogram")):
                    continue
                key = _matrix_key(fam, found, sample_name, labels)
                slot = by_time[float(ts)].setdefault(fam.metric, {})
                scaled = value if fam.type == "histogram" else value * fam.scale
                if fam.combine != "sum" and fam.type != "histogram":
                    slot[key] = max(slot.get(key, -math.inf), scaled)
                else:
                    slot[key] = slot.get(key, 0.0) + scaled
                names_at[float(ts)][fam.metric] = found
    return [Snapshot(t, by_time[t], names_at[t]) for t in sorted(by_time)]


def _matrix_key(fam: Family, name: str, sample_name: str, labels: dict[str, str]) -> str:
    if fam.type == "histogram":
        if sample_name == f"{name}_bucket":
            return f"le={_bound_key(labels.get('le', '+Inf'))}"
        return sample_name.rsplit("_", 1)[1]  # sum / count
    return series_key(fam, labels)
