"""Synthetic runs for the benchmarks (n streamed requests as an Arrow table of records), and a
reader of a records Parquet file with only the columns analysis needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.judge.analysis import OPTIONAL_COLUMNS, RECORD_COLUMNS
from harness.records.log import RECORD_SCHEMA

#: The record columns the generated tables hold: what analysis reads, plus identity.
COLUMNS = {*RECORD_COLUMNS, "request_id", "worker", "wall_sent", "status", "error_detail"}


def records(n: int, chunks: int, seconds: float = 600.0, error_share: float = 0.0) -> pa.Table:
    """n requests sent uniformly over ``seconds``, each with ``chunks`` content chunks about
    20 ms apart after a 100 ms first token; a seeded ``error_share`` of them failed."""
    rng = np.random.default_rng(0)
    t_sent = np.sort(rng.uniform(0, seconds, n))
    times = t_sent[:, None] + 0.1 + np.cumsum(rng.exponential(0.02, (n, chunks)), axis=1)
    failed = pa.array(rng.random(n) < error_share)
    errors = pc.if_else(failed, pa.scalar("http_status"), pa.scalar(None, pa.string()))
    return pa.table(
        {
            "request_id": np.arange(n),
            "worker": pa.array(["w"] * n).dictionary_encode().cast(pa.string()),
            "phase": pa.array(["measure"] * n).dictionary_encode().cast(pa.string()),
            "stream": np.ones(n, bool),
            "wall_sent": t_sent + 1.7e9,
            "t_intended": t_sent - 0.001,
            "t_sent": t_sent,
            "t_first": times[:, 0],
            "t_last": times[:, -1],
            "t_done": times[:, -1] + 0.001,
            "chunk_times": pa.ListArray.from_arrays(
                np.arange(0, n * chunks + 1, chunks, dtype=np.int64).astype(np.int32),
                times.ravel(),
            ),
            "prompt_tokens": np.full(n, 128),
            "output_tokens": np.full(n, chunks),
            "status": np.full(n, 200),
            "error": errors,
            "error_detail": pa.nulls(n, pa.string()),
        },
        schema=pa.schema([f for f in RECORD_SCHEMA if f.name in COLUMNS]),
    )


def read_analysis_columns(path: Path) -> pa.Table:
    """A records Parquet file (or a folder of parts), only the columns analysis needs."""
    present = set(pq.read_schema(path).names) if path.is_file() else set(OPTIONAL_COLUMNS)
    optional = [c for c in OPTIONAL_COLUMNS if c in present]
    return pq.read_table(path, columns=[*RECORD_COLUMNS, *optional])
