"""The vectorised metrics equal a plain per-record reference written from docs/measurement.md."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import goodput_slos, record_lists
from support.synthetic import read_analysis_columns

from harness.judge.analysis import DISTRIBUTION_METRICS, RunMetrics, analyse
from harness.records.record import RequestRecord


@dataclass
class Reference:
    samples: dict[str, list[float]] = field(
        default_factory=lambda: {name: [] for name in DISTRIBUTION_METRICS}
    )
    attempted: int = 0
    succeeded: int = 0
    good: int = 0
    tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_done: float = float("-inf")


def reference(records: list[RequestRecord], slo: Mapping[str, float]) -> Reference:
    """One record at a time, the way one would write it without thinking of speed."""
    ref = Reference()
    for r in records:
        if r.phase != "measure":
            continue
        ref.attempted += 1
        ref.last_done = max(ref.last_done, r.t_done)
        if r.t_intended is not None:
            ref.samples["schedule_lag"].append(r.t_sent - r.t_intended)
        if r.error is not None:
            ref.errors[r.error.value] += 1
            continue
        ref.succeeded += 1
        tokens = r.output_tokens if r.output_tokens is not None else len(r.chunk_times)
        ref.tokens += tokens
        values: dict[str, float | None] = {"ttft": None, "tpot": None, "e2el": None}
        gaps = [b - a for a, b in zip(r.chunk_times, r.chunk_times[1:], strict=False)]
        if r.stream:
            if r.t_first is not None:
                values["ttft"] = r.t_first - r.t_sent
                if r.t_intended is not None:
                    ref.samples["ttft_intended"].append(r.t_first - r.t_intended)
            end = r.t_last
            ref.samples["itl"].extend(gaps)
        else:
            end = r.t_last if r.t_last is not None else r.t_done
            gaps = []
        if end is not None:
            values["e2el"] = end - r.t_sent
            if r.t_intended is not None:
                ref.samples["e2el_intended"].append(end - r.t_intended)
        ttft, e2el = values["ttft"], values["e2el"]
        if ttft is not None and e2el is not None and tokens > 1:
            values["tpot"] = (e2el - ttft) / (tokens - 1)
        for name, value in values.items():
            if value is not None:
                ref.samples[name].append(value)
        meets = True
        for key, bound in slo.items():
            if key == "itl":
                meets = meets and bool(gaps) and all(g <= bound for g in gaps)
            else:
                value = values[key]
                meets = meets and value is not None and value <= bound
        ref.good += meets
    return ref


def frame(records: list[RequestRecord]) -> pd.DataFrame:
    return pd.DataFrame(
        [r.to_row() for r in records], columns=[f.name for f in fields(RequestRecord)]
    )


def assert_matches(metrics: RunMetrics, ref: Reference, start: float, end: float) -> None:
    for name in DISTRIBUTION_METRICS:
        np.testing.assert_allclose(
            np.sort(metrics.samples[name]), np.sort(ref.samples[name]), rtol=1e-12, atol=0
        )
    assert metrics.attempted == ref.attempted
    assert metrics.succeeded == ref.succeeded
    assert metrics.failed == ref.attempted - ref.succeeded
    assert metrics.good == ref.good
    assert dict(metrics.error_classes) == dict(ref.errors)
    duration = max(end, ref.last_done) - start
    assert metrics.duration_s == duration
    if ref.attempted == 0:
        assert all(v is None for v in metrics.scalars.values())
        return
    assert metrics.scalars["error_rate"] == (ref.attempted - ref.succeeded) / ref.attempted
    assert metrics.scalars["request_rate"] == ref.succeeded / duration
    assert metrics.scalars["output_token_rate"] == ref.tokens / duration
    assert metrics.scalars["goodput"] == ref.good / duration


@settings(max_examples=150, deadline=None)
@given(records=record_lists(max_size=25), slo=goodput_slos)
def test_vectorised_metrics_equal_the_per_record_reference(
    records: list[RequestRecord], slo: dict[str, float]
) -> None:
    metrics = analyse(frame(records), 0.0, 30.0, slo)
    assert_matches(metrics, reference(records, slo), 0.0, 30.0)


@settings(max_examples=40, deadline=None)
@given(records=record_lists(min_size=1, max_size=25), slo=goodput_slos)
def test_arrow_table_input_equals_reference(
    records: list[RequestRecord], slo: dict[str, float]
) -> None:
    table = pa.Table.from_pylist([r.to_row() for r in records])
    assert_matches(analyse(table, 0.0, 30.0, slo), reference(records, slo), 0.0, 30.0)


@settings(max_examples=20, deadline=None)
@given(records=record_lists(min_size=1, max_size=25), slo=goodput_slos)
def test_parquet_round_trip_equals_reference(
    tmp_path_factory: pytest.TempPathFactory, records: list[RequestRecord], slo: dict[str, float]
) -> None:
    path = tmp_path_factory.mktemp("records") / "records.parquet"
    pq.write_table(pa.Table.from_pylist([r.to_row() for r in records]), path)
    ref = reference(records, slo)
    assert_matches(analyse(read_analysis_columns(path), 0.0, 30.0, slo), ref, 0.0, 30.0)
    # pandas reads list columns back as numpy arrays and nulls as NaN/None
    assert_matches(analyse(pd.read_parquet(path), 0.0, 30.0, slo), ref, 0.0, 30.0)


@settings(max_examples=60, deadline=None)
@given(records=record_lists(max_size=25), data=st.data())
def test_an_empty_goodput_slo_makes_goodput_the_request_rate(
    records: list[RequestRecord], data: st.DataObject
) -> None:
    metrics = analyse(frame(records), 0.0, data.draw(st.floats(1.0, 100.0)))
    assert metrics.scalars["goodput"] == metrics.scalars["request_rate"]
    assert metrics.good == metrics.succeeded
