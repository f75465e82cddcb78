"""Hypothesis strategies shared by the tests: request records, run metrics and SLO policies.

Records are generated the way the load engine writes them (content chunks in time order,
t_first/t_last on the first/last chunk, failures with partial streams), plus the odd cases a
real run produces: missing usage, empty streams, non-streaming requests, open-loop rows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any, get_args

import numpy as np
from hypothesis import strategies as st

from harness.collectors.window import HistogramWindow
from harness.judge.analysis import DISTRIBUTION_METRICS, RunMetrics
from harness.judge.confidence import FloatArray
from harness.records.record import ErrorClass, Phase, RequestRecord
from harness.spec.metrics import DISTRIBUTION_STATS, METRICS
from harness.spec.policy import Objective, Policy

PHASES: tuple[Phase, ...] = get_args(Phase)

# Millisecond steps keep times exact enough to compare two implementations bit for bit.
_ms = st.integers(min_value=0, max_value=5_000).map(lambda v: v / 1000.0)
_gap = st.integers(min_value=1, max_value=400).map(lambda v: v / 1000.0)


@st.composite
def request_records(draw: st.DrawFn, request_id: int = 0) -> RequestRecord:
    """One request as the load engine records it, successful or failed, in any phase."""
    phase = draw(st.sampled_from(PHASES))
    stream = draw(st.booleans())
    t_sent = draw(st.integers(min_value=0, max_value=60_000)) / 1000.0
    open_loop = draw(st.booleans())
    t_intended = t_sent - draw(_ms) if open_loop else None
    error = draw(st.none() | st.sampled_from(list(ErrorClass)))
    chunks: tuple[float, ...] = ()
    if stream:
        n_chunks = draw(st.integers(min_value=0, max_value=7))
        times = [t_sent + draw(_ms)]
        for gap in draw(st.lists(_gap, min_size=max(n_chunks - 1, 0), max_size=n_chunks)):
            times.append(times[-1] + gap)
        chunks = tuple(times[:n_chunks])
    t_first = chunks[0] if chunks else None
    t_last = chunks[-1] if chunks else None
    if not stream and error is None and draw(st.booleans()):
        t_first = t_last = t_sent + draw(_ms)  # a body-complete time some clients record
    t_done = (t_last if t_last is not None else t_sent) + draw(_ms)
    usage = draw(st.none() | st.integers(min_value=0, max_value=12))
    return RequestRecord(
        request_id=request_id,
        worker=draw(st.sampled_from(["w0", "w1"])),
        phase=phase,
        stream=stream,
        wall_sent=1.7e9 + t_sent,
        t_intended=t_intended,
        t_sent=t_sent,
        t_first=t_first,
        t_last=t_last,
        t_done=t_done,
        chunk_times=chunks,
        prompt_tokens=draw(st.none() | st.integers(min_value=1, max_value=64)),
        output_tokens=usage,
        status=None if error in (ErrorClass.CONNECT, ErrorClass.TIMEOUT) else 200,
        error=error,
    )


@st.composite
def record_lists(draw: st.DrawFn, min_size: int = 0, max_size: int = 30) -> list[RequestRecord]:
    """A run's records, with distinct request ids."""
    size = draw(st.integers(min_value=min_size, max_value=max_size))
    return [draw(request_records(request_id=i)) for i in range(size)]


goodput_slos: st.SearchStrategy[dict[str, float]] = st.dictionaries(
    st.sampled_from(["ttft", "tpot", "e2el", "itl"]),
    st.integers(min_value=1, max_value=3_000).map(lambda v: v / 1000.0),
    max_size=4,
)


def samples_array(values: Sequence[float]) -> FloatArray:
    return np.asarray(values, dtype=np.float64)


_latency = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_subnormal=False)


@st.composite
def run_metrics(draw: st.DrawFn, allow_empty: bool = True) -> RunMetrics:
    """Metrics as analysis returns them, drawn directly so judge tests need no records."""
    min_size = 0 if allow_empty else 1
    samples = {
        name: samples_array(draw(st.lists(_latency, min_size=min_size, max_size=40)))
        for name in DISTRIBUTION_METRICS
    }
    if draw(st.booleans()):
        samples["gpu.utilization"] = samples_array(
            draw(
                st.lists(st.floats(0.0, 1.0, allow_subnormal=False), min_size=min_size, max_size=40)
            )
        )
    histograms: dict[str, HistogramWindow] = {}
    if draw(st.booleans()):
        counts = draw(st.lists(st.integers(0, 50), min_size=len(_TTFT_BOUNDS) + 1,
                               max_size=len(_TTFT_BOUNDS) + 1))  # fmt: skip
        cumulative = tuple(float(x) for x in itertools.accumulate(counts))
        histograms["server.ttft"] = HistogramWindow(
            _TTFT_BOUNDS, cumulative[:-1], cumulative[-1], cumulative[-1] * 0.1
        )
    attempted = draw(st.integers(min_value=min_size, max_value=500))
    failed = draw(st.integers(min_value=0, max_value=attempted))
    rate = st.floats(min_value=0.0, max_value=1_000.0, allow_nan=False, allow_subnormal=False)
    scalars: dict[str, float | None] = {
        "error_rate": failed / attempted if attempted else None,
        "request_rate": draw(rate) if attempted else None,
        "output_token_rate": draw(rate) if attempted else None,
        "goodput": draw(rate) if attempted else None,
    }
    return RunMetrics(
        samples=MappingProxyType(samples),
        scalars=MappingProxyType(scalars),
        attempted=attempted,
        failed=failed,
        succeeded=attempted - failed,
        good=attempted - failed,
        error_classes=MappingProxyType({"timeout": failed} if failed else {}),
        duration_s=10.0,
        histograms=MappingProxyType(histograms),
    )


_TTFT_BOUNDS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
_stats = st.sampled_from([*DISTRIBUTION_STATS, "p50", "p90", "p99", "p99.9"])


@st.composite
def objective_specs(draw: st.DrawFn, metric: str | None = None) -> dict[str, Any]:
    """A valid objective as a policy file holds it (numbers in base units)."""
    name = metric or draw(st.sampled_from(sorted(METRICS)))
    definition = METRICS[name]
    if definition.kind == "scalar":
        stat = "value"
    elif definition.kind == "histogram":
        stat = draw(st.sampled_from(["mean", "p50", "p90", "p99"]))
    else:
        stat = draw(_stats)
    scale = 1.0 if definition.dimension == "ratio" else 10.0
    bounds = st.floats(min_value=0.0, max_value=scale, allow_nan=False, allow_subnormal=False)
    spec: dict[str, Any] = {
        "name": draw(st.text("abcdefgh", min_size=3, max_size=8)),
        "metric": name,
        "stat": stat,
        "critical": draw(st.booleans()),
        "min_samples": draw(st.integers(min_value=1, max_value=5)),
    }
    if draw(st.integers(0, 4)) == 0:
        low, high = sorted((draw(bounds), draw(bounds)))
        spec["target"] = {"min": low, "max": high}
        edge = high if definition.better == "lower" else low
    else:
        spec["target"] = edge = draw(bounds)
    if draw(st.booleans()):
        room = draw(
            st.floats(min_value=0.0, max_value=scale, allow_nan=False, allow_subnormal=False)
        )
        alert = edge + room if definition.better == "lower" else max(0.0, edge - room)
        spec["alert"] = min(alert, 1.0) if definition.dimension == "ratio" else alert
    return spec


@st.composite
def objectives(draw: st.DrawFn, metric: str | None = None) -> Objective:
    """A validated objective on metric (any declared metric when None)."""
    return Objective.model_validate(draw(objective_specs(metric)))


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    """A valid policy of 1-6 objectives with unique names."""
    chosen = draw(st.lists(objectives(), min_size=1, max_size=6))
    renamed = [o.model_copy(update={"name": f"{o.name}-{i}"}) for i, o in enumerate(chosen)]
    return Policy.model_validate({"name": "generated", "objectives": renamed})


# --- OpenAI streaming lines (harness/load/sse.py) ------------------------------------------

_texts = st.text(max_size=6) | st.sampled_from(["", " tok", "é", '"', "\\", "\n", "\x00", "😀"])
_numbers = st.integers(min_value=-(10**12), max_value=10**12) | st.floats(allow_nan=False)


@st.composite
def sse_chunk_objects(draw: st.DrawFn) -> dict[str, Any]:
    """One streamed chunk as servers write them: content, reasoning, empty or role-only
    deltas, completions text, finish reasons, usage, errors and per-chunk varying fields."""
    if draw(st.booleans()):
        delta: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(["role", "content", "reasoning_content"]))):
            delta[key] = "assistant" if key == "role" else draw(st.none() | _texts)
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
    else:
        choice = {"index": 0, "text": draw(st.none() | _texts)}
    choice["finish_reason"] = draw(st.sampled_from([None, None, None, "length", "stop"]))
    obj: dict[str, Any] = {
        "id": draw(st.sampled_from(["chatcmpl-1", "cmpl-2"])),
        "created": draw(_numbers),
        "choices": draw(st.sampled_from([[choice], [choice, choice], [], [choice, 5]])),
    }
    for key, values in (
        ("usage", st.none() | st.fixed_dictionaries({"prompt_tokens": st.integers(0, 9)})),
        ("error", st.none() | st.just({"message": "engine dead"}) | st.just("")),
        ("t_send", _numbers),
        ("obfuscation", _texts),
    ):
        if draw(st.booleans()):
            obj[key] = draw(values)
    return obj


@st.composite
def content_chunk_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A plain content chunk (the common case), with fields some servers vary per chunk."""
    key = draw(st.sampled_from(["content", "reasoning_content", "text"]))
    choice: dict[str, Any] = {"index": 0}
    if key == "text":
        choice["text"] = draw(_texts.filter(bool))
    else:
        choice["delta"] = {key: draw(_texts.filter(bool))}
        if key != "content":
            choice["delta"]["content"] = draw(st.sampled_from([None, ""]))
    choice["finish_reason"] = None
    obj: dict[str, Any] = {"id": "chatcmpl-1", "created": draw(_numbers), "choices": [choice]}
    if draw(st.booleans()):
        obj["usage"] = None
    if draw(st.booleans()):
        obj["t_send"] = draw(_numbers)
    return obj


@st.composite
def sse_lines(
    draw: st.DrawFn, obj: dict[str, Any], separators: tuple[str, str] | None = None
) -> bytes:
    """An SSE data line carrying a chunk, written compactly or with spaces, ASCII or not."""
    if separators is None:
        separators = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    payload = json.dumps(obj, separators=separators, ensure_ascii=draw(st.booleans()))
    prefix = draw(st.sampled_from([b"data: ", b"data:", b" data:  "]))
    return prefix + payload.encode() + draw(st.sampled_from([b"", b"\r", b"\n", b" "]))


@st.composite
def mangled(draw: st.DrawFn, line: bytes) -> bytes:
    """line cut short, or with one byte dropped, replaced or inserted."""
    at = draw(st.integers(min_value=0, max_value=len(line)))
    byte = bytes([draw(st.integers(min_value=0, max_value=255))])
    how = draw(st.sampled_from(["cut", "drop", "replace", "insert"]))
    if how == "cut":
        return line[:at]
    if how == "drop":
        return line[:at] + line[at + 1 :]
    if how == "replace":
        return line[:at] + byte + line[at + 1 :]
    return line[:at] + byte + line[at:]


# --- Server histograms over a window (harness/collectors/window.py) --------------------
# Appended for tests/unit/collectors/test_window.py; keep this block at the end.

_hist_bounds = st.lists(
    st.integers(min_value=1, max_value=100_000), min_size=1, max_size=12, unique=True
).map(lambda ms: tuple(sorted(v / 1000.0 for v in ms)))


@st.composite
def histogram_windows(
    draw: st.DrawFn, min_count: int = 0, monotonic: bool = True
) -> HistogramWindow:
    """A window's histogram: 1-12 positive finite bounds (seconds, ms steps), per-bucket
    counts 0-50 and the +Inf bucket on top. ``monotonic=False`` draws the cumulative
    counts independently (at most the total), as a histogram summed over pods that were
    scraped at slightly different times can show."""
    bounds = draw(_hist_bounds)
    per_bucket = draw(
        st.lists(st.integers(0, 50), min_size=len(bounds) + 1, max_size=len(bounds) + 1)
    )
    total = sum(per_bucket)
    if total < min_count:
        per_bucket[-1] += min_count - total
        total = min_count
    if monotonic:
        cumulative = tuple(float(x) for x in itertools.accumulate(per_bucket[:-1]))
    else:
        cumulative = tuple(float(draw(st.integers(0, total))) for _ in range(len(bounds)))
    mean = draw(st.floats(min_value=0.0, max_value=bounds[-1], allow_nan=False))
    return HistogramWindow(bounds, cumulative, float(total), mean * total)
