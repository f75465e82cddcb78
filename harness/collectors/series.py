"""Time-series points from every collector, appended to disk while the run goes.

One long table for all sources, so a reader lines server, GPU and client data up on one
clock: ``wall`` is ``time.time()`` (what Prometheus and ``RequestRecord.wall_sent`` use);
``samples.parquet`` adds ``t``, the same instant on the run's monotonic clock.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

SAMPLES_JSONL = "samples.jsonl"
SAMPLES_PARQUET = "samples.parquet"
COLUMNS = ("source", "metric", "series", "wall", "value")


@dataclass(frozen=True, slots=True)
class Point:
    """One sampled value of one series.

    ``source``: who measured it ("nvml", "scrape", "prometheus"); ``metric``: a canonical name
    ("gpu.utilization", "server.queue_waiting"), in base units (ratio, bytes, W, J, °C, Hz);
    ``series``: what tells series of one metric apart ("gpu=0", 'pod="a"'), "" for one series.
    """

    source: str
    metric: str
    series: str
    wall: float
    value: float

    def to_row(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "metric": self.metric,
            "series": self.series,
            "wall": self.wall,
            "value": self.value,
        }


class SampleLog:
    """Append-only JSON-lines writer shared by collector threads; flushed per batch."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / SAMPLES_JSONL
        self._lock = threading.Lock()
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self.count = 0

    def write(self, points: list[Point]) -> None:
        if not points:
            return
        text = "".join(json.dumps(p.to_row(), separators=(",", ":")) + "\n" for p in points)
        with self._lock:
            if self._file is None:
                return  # closed: a collector thread finishing late loses nothing measured
            self._file.write(text)
            self._file.flush()
            self.count += len(points)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
