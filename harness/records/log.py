"""Records on disk: appended as JSON lines while the run goes, consolidated to Parquet after.

A killed run keeps every record written so far; `read_table` reads whichever form exists.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from harness.errors import ResultsError
from harness.records.record import ErrorClass, RequestRecord

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

# pandas and pyarrow are imported by the functions that read and consolidate records, after the
# load: writing them (RecordLog) needs neither, so `harness run` starts its load without them.

RECORDS_JSONL = "records.jsonl"
RECORDS_PARQUET = "records.parquet"

#: The records' Arrow schema, built on first use (``__getattr__`` below, PEP 562).
RECORD_SCHEMA: pa.Schema


@functools.cache
def _record_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("request_id", pa.int64()),
            ("worker", pa.string()),
            ("phase", pa.string()),
            ("stream", pa.bool_()),
            ("wall_sent", pa.float64()),
            ("t_intended", pa.float64()),
            ("t_sent", pa.float64()),
            ("t_first", pa.float64()),
            ("t_last", pa.float64()),
            ("t_done", pa.float64()),
            ("chunk_times", pa.list_(pa.float64())),
            ("prompt_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("status", pa.int64()),
            ("error", pa.string()),
            ("error_detail", pa.string()),
            ("session", pa.int64()),
            ("turn", pa.int64()),
            ("planned_prompt_tokens", pa.int64()),
            ("max_tokens", pa.int64()),
            ("output_counted", pa.bool_()),
            ("served_by", pa.string()),
            ("fallbacks", pa.int64()),
            ("retries", pa.int64()),
            ("served_model", pa.string()),
        ]
    )


def __getattr__(name: str) -> Any:
    if name == "RECORD_SCHEMA":
        return _record_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RecordLog:
    """Append-only JSON-lines writer, flushed per record so nothing measured is lost.

    orjson writes a line: on the load loop, once a request, `json.dumps` of a 64-chunk
    record took 50 µs (the float reprs), orjson 3 µs, the same numbers read back."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RECORDS_JSONL
        self._file: IO[bytes] | None = self.path.open("ab")
        self.count = 0

    def write(self, record: RequestRecord) -> None:
        if self._file is None:
            raise ValueError("record log is closed")
        row = record.to_row()
        try:
            line = orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:  # a lone surrogate, from a server's "\\ud800" escape
            line = orjson.dumps(_valid_text(row), option=orjson.OPT_APPEND_NEWLINE)
        self._file.write(line)
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _valid_text(row: dict[str, Any]) -> dict[str, Any]:
    """The row with every string made valid UTF-8: a lone surrogate (which a server's error
    message or model name can carry as a JSON escape) kept visible as its escape, since
    neither the line nor the Parquet file could hold it."""
    return {
        k: v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v
        for k, v in row.items()
    }


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file written while a run went ([] if there is none); a
    line cut by a kill ends the read, since everything before it is whole."""
    rows: list[dict[str, Any]] = []
    if not path.exists():
        return rows
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    return rows


def consolidate(run_dir: Path) -> Path:
    """Write records.parquet from records.jsonl, then drop the JSON lines."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = run_dir / RECORDS_JSONL
    dst = run_dir / RECORDS_PARQUET
    rows = read_jsonl(src)
    table = pa.Table.from_pylist(rows, schema=_record_schema())
    tmp = dst.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(dst)
    if src.exists():
        src.unlink()
    return dst


def read_table(run_dir: Path) -> pa.Table:
    """The run's records as an Arrow table (Parquet if consolidated, else the JSON lines)."""
    parquet = run_dir / RECORDS_PARQUET
    if parquet.exists():
        return _read_parquet(parquet)
    jsonl = run_dir / RECORDS_JSONL
    if jsonl.exists():
        import pyarrow as pa

        return pa.Table.from_pylist(read_jsonl(jsonl), schema=_record_schema())
    raise ResultsError(f"{run_dir}: no {RECORDS_PARQUET} or {RECORDS_JSONL}: not a run folder?")


#: Columns every records file this tool ever wrote has; later columns may be missing (null).
REQUIRED_COLUMNS = ("request_id", "phase", "t_sent", "t_done", "error")


def _read_parquet(path: Path) -> pa.Table:
    """records.parquet, refusing a file that is damaged or is not a harness records file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise ResultsError(
                f"{path}: not a harness records file (no {', '.join(missing)} column)"
            )
        return pq.read_table(path, schema=_record_schema())
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable records file: {exc}") from None


def read_frame(run_dir: Path) -> pd.DataFrame:
    """The run's records as a DataFrame with RequestRecord.to_row() columns."""
    frame: pd.DataFrame = read_table(run_dir).to_pandas()
    return frame


def without_aborted(table: pa.Table) -> tuple[pa.Table, int]:
    """The records less those a signal aborted in flight (they say nothing of the target: an
    interrupted run is judged on what was sent before the signal and finished), and how many
    those were."""
    import pyarrow.compute as pc

    aborted = pc.fill_null(pc.equal(table["error"], ErrorClass.ABORTED.value), False)
    count = int(pc.sum(aborted).as_py() or 0)
    return (table.filter(pc.invert(aborted)) if count else table), count
