"""A record's row: every field once, in order, plain JSON types, and back to the same record."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from harness.records.record import ErrorClass, RequestRecord

times = st.floats(min_value=0, max_value=1e6, allow_nan=False)
records = st.builds(
    RequestRecord,
    request_id=st.integers(0, 2**40),
    worker=st.sampled_from(["local", "w0"]),
    phase=st.sampled_from(["warmup", "measure", "cooldown"]),
    stream=st.booleans(),
    wall_sent=times,
    t_intended=st.none() | times,
    t_sent=times,
    t_first=st.none() | times,
    t_last=st.none() | times,
    t_done=times,
    chunk_times=st.lists(times, max_size=8).map(tuple),
    prompt_tokens=st.none() | st.integers(0, 10**6),
    output_tokens=st.none() | st.integers(0, 10**6),
    status=st.none() | st.integers(100, 599),
    error=st.none() | st.sampled_from(list(ErrorClass)),
    error_detail=st.text(max_size=20),
    served_by=st.none() | st.text(max_size=10),
)


@given(records)
def test_a_row_is_the_record_s_fields_as_plain_json_and_reads_back(record: RequestRecord) -> None:
    row = record.to_row()
    reference = dataclasses.asdict(record)
    reference["chunk_times"] = list(record.chunk_times)
    reference["error"] = None if record.error is None else record.error.value
    assert list(row) == [f.name for f in dataclasses.fields(RequestRecord)]
    assert row == reference
    assert type(row["error"]) in (str, type(None))  # the enum's value, not the enum
    assert RequestRecord.from_row(json.loads(json.dumps(row))) == record
