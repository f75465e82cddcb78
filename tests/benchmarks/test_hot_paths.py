"""Per-chunk and per-run costs of the measuring path (pytest-benchmark; `nox -s bench`).

Each benchmark runs the harness code beside the simplest reference doing the same work in the
same run, so the ratio, not the machine, is what to read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_benchmark.fixture import BenchmarkFixture
from support.synthetic import records

from harness.collectors.families import FAMILIES, ServerKind
from harness.collectors.snapshot import parse_exposition, snapshot_from_samples
from harness.judge.analysis import analyse
from harness.load.sse import StreamState

CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":" word"},"logprobs":null,"finish_reason":null}]}\n'
)
STREAM = [CHUNK, b"\n"] * 256 + [
    b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":256}}\n',
    b"data: [DONE]\n",
]


def _harness_stream() -> StreamState:
    state = StreamState()
    for i, line in enumerate(STREAM):
        state.feed(line, float(i))
    state.finish()
    return state


def _reference_stream() -> list[float]:
    # The least a correct client must do: parse each data line as JSON and keep a time.
    times: list[float] = []
    for i, line in enumerate(STREAM):
        if line.startswith(b"data: {"):
            json.loads(line[6:])
            times.append(float(i))
    return times


@pytest.mark.benchmark(group="sse-stream-256-chunks")
def test_sse_harness(benchmark: BenchmarkFixture) -> None:
    state = benchmark(_harness_stream)
    assert len(state.chunk_times) == 256
    assert state.error is None


@pytest.mark.benchmark(group="sse-stream-256-chunks")
def test_sse_reference_json_only(benchmark: BenchmarkFixture) -> None:
    assert len(benchmark(_reference_stream)) == 257


@pytest.mark.benchmark(group="analyse-100k-records-32-chunks")
def test_analyse_100k_records(benchmark: BenchmarkFixture) -> None:
    table = records(100_000, 32)
    metrics = benchmark(analyse, table, 0.0, 600.0, {"e2el": 2.0})
    assert metrics.attempted == 100_000
    assert len(metrics.samples["itl"]) == 100_000 * 31


@pytest.mark.benchmark(group="analyse-100k-records-32-chunks")
def test_numpy_reference_percentiles_only(benchmark: BenchmarkFixture) -> None:
    # Reference: just the flattened ITL gaps and four percentiles, nothing else.
    table = records(100_000, 32)

    def reference() -> npt.NDArray[np.float64]:
        times = table["chunk_times"].combine_chunks().values.to_numpy().reshape(-1, 32)
        result: npt.NDArray[np.float64] = np.percentile(
            np.diff(times, axis=1).ravel(), [50, 90, 99, 99.9]
        )
        return result

    assert len(benchmark(reference)) == 4


# --- a scrape: the collector agent parses a /metrics page every interval --------------------

PAGES = Path(__file__).resolve().parents[1] / "data" / "metrics"


@pytest.mark.parametrize("page", ["vllm_sim.txt", "litellm.txt"])
def test_scrape_to_snapshot(benchmark: BenchmarkFixture, page: str) -> None:
    """Parse a captured page and combine its families (what one scrape costs the agent)."""
    text = (PAGES / page).read_text()
    kind: ServerKind = "vllm" if page.startswith("vllm") else "litellm"
    snap = benchmark(lambda: snapshot_from_samples(0.0, parse_exposition(text), FAMILIES[kind]))
    assert snap.values


@pytest.mark.parametrize("page", ["vllm_sim.txt", "litellm.txt"])
def test_scrape_parse_reference(benchmark: BenchmarkFixture, page: str) -> None:
    """Reference: prometheus_client's own parser alone, materialising every sample."""
    text = (PAGES / page).read_text()
    count = benchmark(lambda: sum(len(f.samples) for f in text_string_to_metric_families(text)))
    assert count > 0
