"""From the agent's readings to the judge's inputs: finalize() writes server.json and
samples.parquet, read_collection() reads them into metrics with reasons, crosscheck() compares
them with the client's records."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from harness.collectors.series import Point, SampleLog
from harness.collectors.session import CollectorSession, SourcePlan, finalize, plan_sources
from harness.collectors.snapshot import Snapshot
from harness.collectors.stored import read_collection
from harness.judge.crosscheck import crosscheck
from harness.records.log import RECORD_SCHEMA
from harness.records.run_dir import Manifest, Timeline
from harness.spec.collect import CollectSpec

T0 = 1_800_000_000.0  # wall clock at the run's start
TIMELINE = Timeline(wall_start=T0, t_start=100.0, measure_start=102.0, measure_end=110.0,
                    t_end=111.0, wall_end=T0 + 11.0)  # fmt: skip
BOUNDS = ("0.01", "0.02", "0.04", "0.06", "0.08", "0.1")


def snapshot(wall: float, requests: int, tokens: int, waiting: float) -> Snapshot:
    """A vLLM reading: every request so far had a 30 ms TTFT and 10 tokens."""
    ttft = {f"le={float(b)!r}": float(requests if float(b) >= 0.04 else 0) for b in BOUNDS}
    ttft.update({"le=+Inf": float(requests), "count": float(requests), "sum": 0.03 * requests})
    return Snapshot(wall, {
        "server.ttft": ttft,
        "server.generation_tokens": {"": float(tokens)},
        "server.http_requests": {"status=2xx": float(requests)},
        "server.queue_waiting": {"": waiting},
    }, {"server.ttft": "vllm:time_to_first_token_seconds"})  # fmt: skip


def write_run(run_dir: Path) -> CollectorSession:
    spec = CollectSpec()
    collection = CollectorSession(spec, run_dir, plan_sources(spec, "http://127.0.0.1:9/v1"))
    collection.status = {
        "servers": [{"name": "server", "kind": "vllm", "ok": 13, "failed": 0, "first_error": None}],
        "gpu": {"available": True, "reason": None, "gpus": [{"name": "H200"}]},
    }
    with (run_dir / "snapshots.jsonl").open("w") as fh:
        for i in range(13):  # one a second from T0 - 1 to T0 + 11; 2 requests a second
            snap = snapshot(T0 - 1 + i, requests=2 * i, tokens=20 * i, waiting=float(i % 3))
            fh.write(json.dumps(snap.to_json("server")) + "\n")
    log = SampleLog(run_dir)
    for i in range(12):
        log.write([Point("nvml", "gpu.utilization", "gpu=0", T0 + i, 0.5 + 0.01 * i),
                   Point("nvml", "gpu.energy", "gpu=0", T0 + i, 1000.0 + 300.0 * i)])  # fmt: skip
    log.close()
    return collection


def manifest() -> Manifest:
    return Manifest("r", "s.yaml", {}, "p.yaml", {}, {}, timeline=TIMELINE)


def records(n: int, tokens: int = 10) -> pa.Table:
    rows = [
        {"request_id": i, "worker": "w", "phase": "measure", "stream": True,
         "wall_sent": T0 + i, "t_sent": 100.0 + i, "t_first": 100.031 + i,
         "t_last": 100.2 + i, "t_done": 100.21 + i,
         "chunk_times": [100.031 + i + 0.01 * k for k in range(tokens)],
         "prompt_tokens": 32, "output_tokens": tokens, "status": 200, "error": None}
        for i in range(n)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def test_finalize_then_load(tmp_path: Path) -> None:
    doc = finalize(write_run(tmp_path), TIMELINE)
    assert (tmp_path / "server.json").is_file()
    assert (tmp_path / "samples.parquet").is_file()
    assert not (tmp_path / "samples.jsonl").exists()
    source = doc["sources"][0]
    assert source["windows"]["run"]["counters"]["server.generation_tokens"] == {"": 220.0}
    collected = read_collection(tmp_path, manifest())
    assert collected is not None
    # Measured window T0+2 .. T0+10: readings at T0+2 (4 requests) and T0+10 (20).
    assert collected.histograms["server.ttft"].count == 16
    assert collected.scalars["server.generation_token_rate"] == pytest.approx(160 / 8)
    assert collected.scalars["server.error_rate"] == 0.0
    util = collected.series["gpu.utilization"]
    assert util.size == 9  # T0+2 .. T0+10
    assert util.min() == pytest.approx(0.52)
    assert collected.scalars["gpu.energy"] == pytest.approx(2400.0)
    assert set(collected.series["server.queue_waiting"]) <= {0.0, 1.0, 2.0}
    # What no source measured says so, in the judge's words.
    assert "not measured by a vllm server" in collected.missing["gateway.e2el"]
    assert "server.ttft" not in collected.missing


def test_crosscheck_agrees_and_flags(tmp_path: Path) -> None:
    finalize(write_run(tmp_path), TIMELINE)
    collected = read_collection(tmp_path, manifest())
    assert collected is not None
    checks = {c.name: c for c in crosscheck(records(22), collected)}
    assert checks["output tokens vs server"].ok is True
    assert checks["requests vs server"].ok is True
    assert checks["ttft vs server.ttft"].ok is True, checks["ttft vs server.ttft"].detail
    # Half the tokens and far slower TTFTs than the server saw: both flagged.
    slow = records(22, tokens=5)
    slow = slow.set_column(slow.schema.get_field_index("t_first"), "t_first",
                           pa.array([100.5 + i for i in range(22)]))  # fmt: skip
    flagged = {c.name: c for c in crosscheck(slow, collected)}
    assert flagged["output tokens vs server"].ok is False
    assert flagged["ttft vs server.ttft"].ok is False
    assert "outside the server" in flagged["ttft vs server.ttft"].detail


def test_a_failed_scrape_is_a_reason(tmp_path: Path) -> None:
    spec = CollectSpec()
    plan = SourcePlan("server", None, "scrape", "http://127.0.0.1:9/metrics", {}, None)
    collection = CollectorSession(spec, tmp_path, [plan])
    collection.status = {
        "servers": [{"name": "server", "kind": None, "ok": 0, "failed": 12,
                     "first_error": "unreachable: [Errno 111] Connection refused"}],
        "gpu": {"available": False, "reason": "no NVIDIA driver: GPU metrics not collected"},
    }  # fmt: skip
    finalize(collection, TIMELINE)
    collected = read_collection(tmp_path, manifest())
    assert collected is not None
    assert "Connection refused" in collected.missing["server.ttft"]
    assert "no NVIDIA driver" in collected.missing["gpu.utilization"]


def test_the_targets_key_goes_only_to_the_target() -> None:
    spec = CollectSpec.model_validate(
        {
            "servers": [
                {"kind": "litellm"},  # the target's own /metrics
                {"kind": "vllm", "metrics_url": "http://127.0.0.1:4000/metrics"},  # same server
                {"kind": "vllm", "metrics_url": "http://127.0.0.1:8001/metrics"},  # another port
                {"kind": "dcgm", "metrics_url": "http://gpu-node:9400/metrics"},  # another host
                {"kind": "llamacpp", "api_key_env": "OWN_KEY"},  # its own key wins
            ]
        }
    )
    plans = plan_sources(spec, "http://127.0.0.1:4000/v1", "GATEWAY_KEY")
    assert [p.api_key_env for p in plans] == ["GATEWAY_KEY", "GATEWAY_KEY", None, None, "OWN_KEY"]
    assert plans[0].url == "http://127.0.0.1:4000/metrics"
