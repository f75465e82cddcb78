"""A record's row: every field once, in order, plain JSON types, and back to the same record."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.records.log import RecordLog, consolidate, read_table
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


@settings(deadline=None, max_examples=50)  # files and Parquet: a first call imports pyarrow
@given(st.lists(records, min_size=1, max_size=5))
def test_records_written_while_the_run_goes_read_back_the_same_from_either_file(
    written: list[RequestRecord],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        log = RecordLog(run_dir)
        for record in written:
            log.write(record)
        log.close()
        rows = read_table(run_dir).to_pylist()  # the JSON lines
        assert [RequestRecord.from_row(r) for r in rows] == written
        consolidate(run_dir)
        rows = read_table(run_dir).to_pylist()  # the Parquet file
        assert [RequestRecord.from_row(r) for r in rows] == written


def test_a_lone_surrogate_from_a_server_is_kept_as_its_escape(tmp_path: Path) -> None:
    # A server's error message or model name can carry "\ud800" as a JSON escape: neither a
    # JSON line nor Parquet can hold the character, so the record keeps the escape visible.
    text = json.loads('"bad \\ud800 bytes"')
    record = RequestRecord.from_row({
        "request_id": 1, "worker": "local", "phase": "measure", "stream": True,
        "wall_sent": 1.0, "t_sent": 1.0, "t_done": 2.0, "error": "broken_stream",
        "error_detail": text, "served_model": text,
    })  # fmt: skip
    log = RecordLog(tmp_path)
    log.write(record)
    log.close()
    consolidate(tmp_path)
    (row,) = read_table(tmp_path).to_pylist()
    assert row["error_detail"] == row["served_model"] == "bad \\ud800 bytes"
