"""Hand-computed metrics for small runs, and the edge cases a real run produces."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.synthetic import read_analysis_columns

from harness.judge.analysis import (
    DISTRIBUTION_METRICS,
    OPTIONAL_COLUMNS,
    RECORD_COLUMNS,
    analyse,
    latency_stats,
    statistic,
    summarise,
)
from harness.records.record import ErrorClass, RequestRecord
from harness.report.common import token_source_note


def rec(**changes: Any) -> RequestRecord:
    """A successful streamed request sent at t=100: TTFT 0.2 s, E2EL 0.5 s, 4 tokens."""
    base: dict[str, Any] = {
        "request_id": 0,
        "worker": "w0",
        "phase": "measure",
        "stream": True,
        "wall_sent": 1.7e9,
        "t_intended": None,
        "t_sent": 100.0,
        "t_first": 100.25,
        "t_last": 100.5,
        "t_done": 100.5,
        "chunk_times": (100.25, 100.375, 100.5),
        "prompt_tokens": 10,
        "output_tokens": 3,
        "status": 200,
        "error": None,
    }
    base.update(changes)
    return RequestRecord(**base)


def frame(*records: RequestRecord) -> pd.DataFrame:
    return pd.DataFrame(
        [r.to_row() for r in records], columns=[f.name for f in fields(RequestRecord)]
    )


def values(metrics_samples: Any) -> list[float]:
    return [float(v) for v in metrics_samples]


def test_hand_computed_streaming_request() -> None:
    r = rec(
        t_first=100.2,
        t_last=100.5,
        chunk_times=(100.2, 100.25, 100.35, 100.5),
        output_tokens=4,
        t_done=100.55,
    )
    m = analyse(frame(r), 99.0, 101.0)
    assert values(m.samples["ttft"]) == pytest.approx([0.2])
    assert values(m.samples["e2el"]) == pytest.approx([0.5])
    assert values(m.samples["tpot"]) == pytest.approx([(0.5 - 0.2) / 3])
    assert values(m.samples["itl"]) == pytest.approx([0.05, 0.1, 0.15])
    assert m.scalars["request_rate"] == pytest.approx(0.5)
    assert m.scalars["output_token_rate"] == pytest.approx(2.0)
    assert m.scalars["error_rate"] == 0.0
    assert m.duration_s == 2.0
    assert m.prompt_tokens_mean == 10.0
    assert m.output_tokens_mean == 4.0


def test_tpot_counts_tokens_from_usage_not_chunks() -> None:
    # 3 chunks but the server says 9 tokens (a chunk may carry several)
    m = analyse(frame(rec(output_tokens=9)), 99.0, 101.0)
    assert values(m.samples["tpot"]) == pytest.approx([0.25 / 8])
    assert m.scalars["output_token_rate"] == pytest.approx(9 / 2)


def test_tpot_falls_back_to_the_chunk_count_without_usage() -> None:
    m = analyse(frame(rec(output_tokens=None)), 99.0, 101.0)
    assert values(m.samples["tpot"]) == pytest.approx([0.25 / 2])
    assert m.scalars["output_token_rate"] == pytest.approx(3 / 2)


def test_one_output_token_gives_no_tpot_and_no_itl() -> None:
    r = rec(t_first=100.3, t_last=100.3, chunk_times=(100.3,), output_tokens=1)
    m = analyse(frame(r), 99.0, 101.0)
    assert values(m.samples["ttft"]) == pytest.approx([0.3])
    assert values(m.samples["e2el"]) == pytest.approx([0.3])
    assert m.samples["tpot"].size == 0
    assert m.samples["itl"].size == 0


def test_a_stream_without_content_chunks_has_no_latencies_but_counts_as_completed() -> None:
    r = rec(t_first=None, t_last=None, chunk_times=(), output_tokens=0)
    m = analyse(frame(r, rec()), 99.0, 101.0)
    assert m.succeeded == 2
    assert m.samples["ttft"].size == 1
    assert m.samples["e2el"].size == 1
    assert m.samples["itl"].size == 2
    assert m.scalars["output_token_rate"] == pytest.approx(3 / 2)


def test_empty_stream_failure_counts_its_error_class() -> None:
    r = rec(
        t_first=None,
        t_last=None,
        chunk_times=(),
        output_tokens=None,
        error=ErrorClass.INCOMPLETE,
    )
    m = analyse(frame(r, rec()), 99.0, 101.0)
    assert (m.attempted, m.failed, m.succeeded) == (2, 1, 1)
    assert m.scalars["error_rate"] == 0.5
    assert dict(m.error_classes) == {"incomplete": 1}


def test_all_failed() -> None:
    broken = rec(error=ErrorClass.BROKEN_STREAM, output_tokens=None)
    status = rec(
        error=ErrorClass.HTTP_STATUS,
        status=503,
        t_first=None,
        t_last=None,
        chunk_times=(),
        output_tokens=None,
    )
    m = analyse(frame(broken, status, status), 99.0, 101.0)
    assert m.scalars["error_rate"] == 1.0
    assert m.scalars["request_rate"] == 0.0
    assert m.scalars["output_token_rate"] == 0.0
    assert m.scalars["goodput"] == 0.0
    assert all(m.samples[name].size == 0 for name in DISTRIBUTION_METRICS)
    # most frequent class first
    assert list(m.error_classes.items()) == [("http_status", 2), ("broken_stream", 1)]
    assert m.prompt_tokens_mean is None


def test_no_measured_rows() -> None:
    m = analyse(frame(rec(phase="warmup")), 99.0, 101.0, {"ttft": 1.0})
    assert m.attempted == 0
    assert all(v is None for v in m.scalars.values())
    assert all(m.samples[name].size == 0 for name in DISTRIBUTION_METRICS)
    assert m.duration_s == 2.0


def test_an_empty_frame_is_a_run_without_data() -> None:
    m = analyse(pd.DataFrame({c: [] for c in RECORD_COLUMNS}), 0.0, 1.0)
    assert m.attempted == 0
    assert m.scalars["error_rate"] is None


def test_warmup_and_cooldown_rows_are_excluded() -> None:
    slow = {"t_first": 105.0, "t_last": 106.0, "chunk_times": (105.0, 106.0), "t_done": 106.0}
    records = (
        rec(phase="warmup", **slow),
        rec(),
        rec(phase="cooldown", error=ErrorClass.TIMEOUT, **slow),
    )
    m = analyse(frame(*records), 99.0, 101.0)
    assert m.attempted == 1
    assert values(m.samples["ttft"]) == pytest.approx([0.25])
    assert m.duration_s == 2.0  # the cooldown row's late t_done does not stretch the window
    assert dict(m.error_classes) == {}


def test_non_streaming_rows_contribute_e2el_only() -> None:
    with_body_time = rec(
        stream=False, t_first=100.7, t_last=100.7, chunk_times=(), t_done=100.8, output_tokens=20
    )
    without = rec(stream=False, t_first=None, t_last=None, chunk_times=(), t_done=100.9)
    m = analyse(frame(with_body_time, without), 99.0, 101.0)
    assert sorted(values(m.samples["e2el"])) == pytest.approx([0.7, 0.9])
    for name in ("ttft", "tpot", "itl"):
        assert m.samples[name].size == 0
    assert m.scalars["output_token_rate"] == pytest.approx(23 / 2)


def test_open_loop_latency_from_the_intended_send_time() -> None:
    late = rec(t_intended=99.9)
    failed = rec(t_intended=99.5, error=ErrorClass.CONNECT, t_first=None, t_last=None)
    closed = rec()
    m = analyse(frame(late, failed, closed), 99.0, 101.0)
    assert values(m.samples["ttft_intended"]) == pytest.approx([0.35])
    assert values(m.samples["e2el_intended"]) == pytest.approx([0.6])
    # lag describes the load generator: failed requests have one too, closed-loop rows none
    assert sorted(values(m.samples["schedule_lag"])) == pytest.approx([0.1, 0.5])
    assert m.samples["ttft"].size == 2


def test_goodput_hand_computed() -> None:
    fast = rec()  # ttft 0.25, e2el 0.5, tpot 0.125, gaps 0.125
    slow_first = rec(t_first=100.6, t_last=100.8, chunk_times=(100.6, 100.7, 100.8), t_done=100.8)
    one_chunk = rec(t_first=100.1, t_last=100.1, chunk_times=(100.1,), output_tokens=1)
    failed = rec(error=ErrorClass.TIMEOUT)
    non_stream = rec(stream=False, chunk_times=(), t_first=None, t_last=None, t_done=100.4)
    records = frame(fast, slow_first, one_chunk, failed, non_stream)

    m = analyse(records, 98.0, 102.0, {"ttft": 0.3})
    assert m.good == 2  # fast and one_chunk; the non-streaming row has no TTFT
    assert m.scalars["goodput"] == pytest.approx(2 / 4)

    m = analyse(records, 98.0, 102.0, {"e2el": 0.45})
    assert m.good == 2  # one_chunk (0.1 s) and non_stream (0.4 s)

    m = analyse(records, 98.0, 102.0, {"itl": 0.13})
    assert m.good == 2  # fast and slow_first; one_chunk has no gap to judge

    m = analyse(records, 98.0, 102.0, {"itl": 0.11})
    assert m.good == 1  # slow_first's gaps of 0.1 s; fast has 0.125 s gaps

    m = analyse(records, 98.0, 102.0, {"ttft": 0.3, "tpot": 0.2})
    assert m.good == 1  # one_chunk has no TPOT

    m = analyse(records, 98.0, 102.0, {})
    assert m.good == 4
    assert m.scalars["goodput"] == m.scalars["request_rate"] == pytest.approx(1.0)


def test_unknown_goodput_key_is_refused() -> None:
    with pytest.raises(ValueError, match="goodput SLO keys"):
        analyse(frame(rec()), 99.0, 101.0, {"latency": 1.0})


def test_requests_finishing_after_the_window_stretch_the_duration() -> None:
    m = analyse(frame(rec(t_done=104.0)), 99.0, 101.0)
    assert m.duration_s == 5.0
    assert m.scalars["request_rate"] == pytest.approx(1 / 5)


def test_a_window_of_no_length_gives_no_rates() -> None:
    m = analyse(frame(rec(t_done=100.0)), 100.0, 100.0)
    assert m.duration_s == 0.0
    assert m.scalars["request_rate"] is None
    assert m.scalars["error_rate"] == 0.0


def test_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="chunk_times"):
        analyse(frame(rec()).drop(columns=["chunk_times"]), 0.0, 1.0)


def test_nan_errors_and_null_intended_times_from_pandas() -> None:
    df = frame(rec(), rec(error=ErrorClass.TIMEOUT))
    df["error"] = pd.Series([np.nan, "timeout"], dtype=object)
    df["t_intended"] = np.nan
    m = analyse(df, 99.0, 101.0)
    assert (m.succeeded, m.failed) == (1, 1)
    assert m.samples["schedule_lag"].size == 0


def test_parquet_reader_matches_the_dataframe(tmp_path: Path) -> None:
    records = (rec(), rec(t_intended=99.0, output_tokens=None), rec(error=ErrorClass.TIMEOUT))
    path = tmp_path / "records.parquet"
    pq.write_table(pa.Table.from_pylist([r.to_row() for r in records]), path)
    table = read_analysis_columns(path)
    assert table.column_names == [*RECORD_COLUMNS, *OPTIONAL_COLUMNS]
    from_file = analyse(table, 99.0, 101.0, {"ttft": 1.0})
    from_frame = analyse(frame(*records), 99.0, 101.0, {"ttft": 1.0})
    assert summarise(from_file) == summarise(from_frame)


def test_samples_are_read_only() -> None:
    m = analyse(frame(rec()), 99.0, 101.0)
    with pytest.raises(ValueError, match="read-only"):
        m.samples["ttft"][0] = 0.0


def test_summary_uses_linear_percentiles() -> None:
    e2els = [0.1, 0.2, 0.3, 0.4, 1.5]
    records = [
        rec(request_id=i, t_last=100.0 + e, t_done=100.0 + e, t_first=100.05, chunk_times=(100.05,))
        for i, e in enumerate(e2els)
    ]
    s = summarise(analyse(frame(*records), 99.0, 101.0))
    assert s.e2el_s.n == 5
    assert s.e2el_s.p50 == pytest.approx(0.3)
    assert s.e2el_s.p90 == pytest.approx(0.4 + 0.6 * 1.1)  # between 0.4 and 1.5
    assert s.e2el_s.mean == pytest.approx(0.5)
    assert s.requests == 5
    assert s.tpot_s.n == 5  # usage says 3 tokens although each row streamed one chunk
    assert s.schedule_lag_s.mean is None


def test_statistic() -> None:
    samples = np.array([4.0, 1.0, 3.0, 2.0])
    assert statistic(samples, "p50") == 2.5
    assert statistic(samples, "p99.9") == pytest.approx(3.997)
    assert statistic(samples, "mean") == 2.5
    assert statistic(samples, "max") == 4.0
    assert statistic(samples, "min") == 1.0
    with pytest.raises(ValueError, match="no samples"):
        statistic(np.array([]), "p50")
    with pytest.raises(ValueError, match="unknown"):
        statistic(samples, "median")


def test_latency_stats_without_samples() -> None:
    assert latency_stats(None).p99 is None
    assert latency_stats(np.array([])).n == 0


def test_itl_goodput_judges_each_request_by_its_own_gaps() -> None:
    # rows of one or no chunk between multi-chunk rows must not leak gaps into their neighbours
    records = (
        rec(t_first=100.0, chunk_times=(100.0, 100.1), t_last=100.1),
        rec(t_first=100.0, chunk_times=(100.0,), t_last=100.0),
        rec(t_first=None, chunk_times=(), t_last=None),
        rec(t_first=107.0, chunk_times=(107.0, 107.05, 107.35), t_last=107.35, t_done=107.4),
        rec(t_first=100.0, chunk_times=(100.0, 100.125, 100.25), t_last=100.25),
    )
    m = analyse(frame(*records), 99.0, 101.0, {"itl": 0.2})
    assert m.good == 2  # the first and the last
    assert sorted(values(m.samples["itl"])) == pytest.approx([0.05, 0.1, 0.125, 0.125, 0.3])


def test_a_chunked_arrow_table_with_null_lists() -> None:
    rows = [rec().to_row(), rec(t_first=None, t_last=None).to_row()]
    rows[1]["chunk_times"] = None
    part = pa.Table.from_pylist(rows)
    table = pa.concat_tables([part, part.slice(0, 1), part])
    assert table["chunk_times"].num_chunks == 3
    m = analyse(table, 99.0, 101.0, {"itl": 0.2})
    assert m.samples["itl"].size == 6
    assert m.good == 3


def test_chunk_times_must_be_lists() -> None:
    df = frame(rec())
    df["chunk_times"] = [100.25]
    with pytest.raises(ValueError, match="chunk_times: expected lists"):
        analyse(df, 99.0, 101.0)


def test_output_tokens_without_usage_are_counted_and_said() -> None:
    records = (rec(), rec(output_tokens=None), rec(output_tokens=None),
               rec(output_tokens=None, error=ErrorClass.TIMEOUT))  # fmt: skip
    m = analyse(frame(*records), 99.0, 101.0)
    assert m.output_tokens_from_chunks == 2  # successful ones only
    summary = summarise(m)
    assert summary.output_tokens_from_chunks == 2
    assert "2 of 3 successful requests came without usage" in (token_source_note(summary) or "")
    assert token_source_note(summarise(analyse(frame(rec()), 99.0, 101.0))) is None
