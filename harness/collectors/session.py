"""Running the collectors around a load run, then turning their readings into results.

``CollectorSession`` starts the agent process (direct scrapes and NVML) before the load and stops
it after; ``finalize`` queries Prometheus if one is named, computes each server's deltas over
the measured window and over the whole run, and writes ``server.json`` and
``samples.parquet``. Nothing here raises into the run: a collector that fails leaves a
reason in ``server.json``, and the objectives that need its data are INCONCLUSIVE.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from harness.collectors import prometheus
from harness.collectors.agent import SNAPSHOTS_NAME
from harness.collectors.families import FAMILIES, ServerKind
from harness.collectors.series import SAMPLES_JSONL, SAMPLES_PARQUET, Point
from harness.collectors.snapshot import Snapshot
from harness.collectors.window import series_points, window
from harness.records.log import read_jsonl
from harness.records.run_dir import Timeline
from harness.spec.collect import CollectSpec, ServerSource

if TYPE_CHECKING:
    import pyarrow as pa

# pyarrow is imported when the samples are written, after the load (``finalize``): starting the
# collectors before it needs nothing heavier than the standard library.

SERVER_NAME = "server.json"
SERVER_SCHEMA = 1
READY_TIMEOUT_S = 30.0

#: The samples' Arrow schema, built on first use (``__getattr__`` below, PEP 562).
SAMPLE_SCHEMA: pa.Schema


@functools.cache
def _sample_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("metric", pa.string()),
            ("series", pa.string()),
            ("wall", pa.float64()),
            ("t", pa.float64()),
            ("value", pa.float64()),
        ]
    )


def __getattr__(name: str) -> Any:
    if name == "SAMPLE_SCHEMA":
        return _sample_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class SourcePlan:
    """One server to read, resolved against the target: a name, a kind, where to read it."""

    name: str
    kind: ServerKind | None  # None: detect
    mode: str  # "scrape" or "prometheus"
    url: str | None  # the page scraped (scrape mode)
    selector: dict[str, str]
    api_key_env: str | None

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "mode": self.mode,
            "url": redact_url(self.url) if self.url else None,
            "selector": self.selector,
        }


def redact_url(url: str) -> str:
    """A URL without user:password (keys never reach results)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def metrics_url_for(target_url: str) -> str:
    """A target's metrics page: vLLM, llama.cpp and LiteLLM serve it beside /v1."""
    parts = urlsplit(target_url.rstrip("/"))
    path = parts.path
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit(parts._replace(path=path + "/metrics", query="", fragment=""))


def _same_server(a: str, b: str) -> bool:
    """Same scheme, host and port: where the target's key may be sent."""
    pa_, pb = urlsplit(a), urlsplit(b)
    return (pa_.scheme, pa_.hostname, pa_.port) == (pb.scheme, pb.hostname, pb.port)


def plan_sources(
    spec: CollectSpec, target_url: str, target_key_env: str | None = None
) -> list[SourcePlan]:
    """The servers to read: those the scenario lists, or the target itself.

    A page on the target under test (its own /metrics, or a metrics_url on the same host and
    port) is read with the target's API key when the source names no key of its own: LiteLLM
    answers 401 to /metrics when a master key is set. The key never goes to another host."""
    sources = spec.servers if spec.servers is not None else [ServerSource()]
    plans: list[SourcePlan] = []
    seen: dict[str, int] = defaultdict(int)
    for src in sources:
        kind: ServerKind | None = None if src.kind == "auto" else src.kind
        mode = src.via if src.via != "auto" else (
            "prometheus" if spec.prometheus is not None else "scrape"
        )  # fmt: skip
        base = src.kind if src.kind != "auto" else "server"
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}-{seen[base]}"
        url = None
        key_env = src.api_key_env
        if mode == "scrape":
            url = src.metrics_url or metrics_url_for(target_url)
            if key_env is None and _same_server(url, target_url):
                key_env = target_key_env
        plans.append(SourcePlan(name, kind, mode, url, dict(src.selector), key_env))
    return plans


@dataclass(slots=True)
class CollectorSession:
    """The collectors of one run; ``start`` before the load, ``stop`` after it."""

    spec: CollectSpec
    run_dir: Path
    sources: list[SourcePlan]
    status: dict[str, Any] = field(default_factory=dict)
    _proc: subprocess.Popen[str] | None = None
    _stderr: IO[str] | None = None

    @property
    def needs_agent(self) -> bool:
        return self.spec.gpu != "off" or any(s.mode == "scrape" for s in self.sources)

    def start(self) -> None:
        """Start the agent and wait for its first reading (taken before any load)."""
        if not self.needs_agent:
            return
        plan = {
            "run_dir": str(self.run_dir),
            "interval_s": self.spec.interval_s,
            "gpu": self.spec.gpu,
            "gpu_devices": self.spec.gpu_devices,
            "scrape": [
                {
                    "name": s.name,
                    "url": s.url,
                    "kind": s.kind,
                    "selector": s.selector,
                    "api_key_env": s.api_key_env,
                    "timeout_s": max(1.0, min(5.0, 2 * self.spec.interval_s)),
                }
                for s in self.sources
                if s.mode == "scrape"
            ],
        }
        self._stderr = (self.run_dir / "collector.log").open("w", encoding="utf-8")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "harness.collectors.agent"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the harness, which stops the agent in order
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(plan) + "\n")
        self._proc.stdin.flush()
        line = self._read_line(READY_TIMEOUT_S)
        if line.startswith("ready "):
            self.status = json.loads(line[len("ready ") :])
        else:
            self.status = {"error": f"collector agent did not start: {line or 'no answer'}"}

    def stop(self) -> None:
        """Take the last reading and end the agent; never raises."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        try:
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.close()
        except OSError:
            pass
        for _ in range(1000):  # the agent prints only "ready" and "done": bounded anyway
            line = self._read_line(30.0, proc)
            if not line:
                break
            if line.startswith("done "):
                self.status = json.loads(line[len("done ") :])
                break
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if self._stderr is not None:
            self._stderr.close()

    def _read_line(self, timeout_s: float, proc: subprocess.Popen[str] | None = None) -> str:
        """One line of the agent's output, or "" on end of output or after ``timeout_s``."""
        proc = proc or self._proc
        stdout = None if proc is None else proc.stdout
        if stdout is None:
            return ""
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout_s)
        return out[0].strip() if out else ""


def read_snapshots(run_dir: Path) -> dict[str, list[Snapshot]]:
    """Every server snapshot of a run, by source name, in time order."""
    out: dict[str, list[Snapshot]] = defaultdict(list)
    for data in read_jsonl(run_dir / SNAPSHOTS_NAME):
        out[str(data["source"])].append(Snapshot.from_json(data))
    for snaps in out.values():
        snaps.sort(key=lambda s: s.wall)
    return out


def append_snapshots(run_dir: Path, source: str, snapshots: list[Snapshot]) -> None:
    with (run_dir / SNAPSHOTS_NAME).open("a", encoding="utf-8") as fh:
        for snap in snapshots:
            fh.write(json.dumps(snap.to_json(source)) + "\n")


def wall_of(timeline: Timeline, t: float) -> float:
    """A monotonic run time as wall-clock time."""
    return timeline.wall_start + (t - timeline.t_start)


def finalize(
    collection: CollectorSession,
    timeline: Timeline | None,
    query_factory: Any = None,
) -> dict[str, Any]:
    """After the run: read Prometheus if named, compute windows, write server.json and
    samples.parquet. Returns the server.json document."""
    spec = collection.spec
    run_dir = collection.run_dir
    doc: dict[str, Any] = {
        "schema": SERVER_SCHEMA,
        "interval_s": spec.interval_s,
        "gpu": collection.status.get("gpu", {"available": False, "reason": "GPU sampling off"}),
        "sources": [],
        "tolerance": spec.crosscheck_tolerance,
    }
    if "error" in collection.status:
        doc["error"] = collection.status["error"]
    scraped = {s["name"]: s for s in collection.status.get("servers", [])}
    stale = 2 * spec.interval_s + 1.0
    if timeline is not None and any(s.mode == "prometheus" for s in collection.sources):
        _read_prometheus(collection, timeline, query_factory, doc)
    snaps = read_snapshots(run_dir)
    for src in collection.sources:
        entry: dict[str, Any] = {**src.public(), **doc.get("_prom", {}).get(src.name, {})}
        if src.mode == "scrape":
            st = scraped.get(src.name, {})
            entry["kind"] = st.get("kind", src.kind)
            entry["scrapes"] = {k: st.get(k) for k in ("ok", "failed", "first_error")}
            if st.get("first_error"):
                entry.setdefault("problems", {})
                if not st.get("ok"):
                    entry["problems"]["*"] = f"{redact_url(src.url or '')}: {st['first_error']}"
        kind = entry.get("kind")
        mine = snaps.get(src.name, [])
        if kind and timeline is not None:
            families = FAMILIES[kind]
            m_start = wall_of(timeline, timeline.measure_start)
            m_end = wall_of(timeline, timeline.measure_end)
            entry["windows"] = {
                "measure": window(mine, families, m_start, m_end, stale).to_json(),
                "run": window(
                    mine, families, timeline.wall_start,
                    max([timeline.wall_end, *(s.wall for s in mine[-1:])]), stale,
                ).to_json(),
            }  # fmt: skip
        entry["snapshots"] = len(mine)
        doc["sources"].append(entry)
    doc.pop("_prom", None)
    _write_samples(run_dir, timeline, collection.sources, doc, snaps)
    tmp = run_dir / (SERVER_NAME + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(run_dir / SERVER_NAME)
    return doc


def _read_prometheus(
    collection: CollectorSession, timeline: Timeline, query_factory: Any, doc: dict[str, Any]
) -> None:
    spec = collection.spec
    assert spec.prometheus is not None
    prom = spec.prometheus
    token = os.environ.get(prom.api_key_env) if prom.api_key_env else None
    factory = query_factory or prometheus.ApiClientQuery
    try:
        query = factory(prom.url, prom.timeout_s, token)
    except Exception as exc:  # a bad URL or a missing library: a reason, not a crash
        query = None
        failure = f"Prometheus client could not start: {exc}"
    found: dict[str, Any] = {}
    settle = prom.settle_s
    for src in collection.sources:
        if src.mode != "prometheus":
            continue
        if query is None:
            found[src.name] = {"problems": {"*": failure}}
            continue
        res = prometheus.read(
            query, src.kind, src.selector, timeline.wall_start - spec.interval_s,
            timeline.wall_end, spec.interval_s, settle,
        )  # fmt: skip
        settle = min(settle, 2.0)  # waited once for the run's end; the rest are there too
        append_snapshots(collection.run_dir, src.name, res.snapshots)
        found[src.name] = {
            "kind": res.kind,
            "prometheus": prom.url,
            "queries": res.queries,
            "problems": res.problems,
            "notes": res.notes,
        }
    doc["_prom"] = found


def _write_samples(
    run_dir: Path,
    timeline: Timeline | None,
    sources: list[SourcePlan],
    doc: dict[str, Any],
    snaps: dict[str, list[Snapshot]],
) -> None:
    """samples.parquet: GPU points as sampled, server gauges and counter rates from snapshots."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = run_dir / SAMPLES_JSONL
    rows = read_jsonl(jsonl)
    for entry in doc["sources"]:
        kind = entry.get("kind")
        if not kind:
            continue
        points: list[Point] = series_points(
            entry["name"], snaps.get(entry["name"], []), FAMILIES[kind]
        )
        rows += [p.to_row() for p in points]
    offset = 0.0 if timeline is None else timeline.t_start - timeline.wall_start
    for row in rows:
        row["t"] = row["wall"] + offset if timeline is not None else None
    table = pa.Table.from_pylist(rows, schema=_sample_schema())
    tmp = run_dir / (SAMPLES_PARQUET + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(run_dir / SAMPLES_PARQUET)
    if jsonl.exists():
        jsonl.unlink()


def session_manifest(collection: CollectorSession) -> dict[str, Any]:
    """The manifest's ``collect`` entry: what ran, where, and the GPUs found (no keys)."""
    return {
        "interval_s": collection.spec.interval_s,
        "prometheus": None if collection.spec.prometheus is None
        else redact_url(collection.spec.prometheus.url),
        "servers": [s.public() for s in collection.sources],
        "agent": {k: v for k, v in collection.status.items() if k != "gpu"},
        "gpu": collection.status.get("gpu"),
    }  # fmt: skip
