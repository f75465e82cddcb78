"""An early-stop look's cost against the records already taken, and what looks do to the load
generator's loop (issue: flat from 10 000 to 200 000 records; loop lag unchanged).

For each size N: N measured records (16 chunks each) are folded in first, as earlier looks
would have, then one look folds 500 new records and judges the runbook's policy plus TTFT
and ITL percentiles. Beside it, the look as it was before (every record converted to Arrow
and analysed again). Then a gevent loop ticks every millisecond while a look runs in the
thread pool every 100 ms; the ticks' lateness is the loop lag a look causes, against the
same loop with no looks.

    .venv/bin/python tests/benchmarks/early_looks.py [--sizes 10000 200000]
"""

from __future__ import annotations

import argparse
import time

import gevent
import numpy as np
import pyarrow as pa

import harness.load  # noqa: F401  (gevent patches the standard library first, as in a run)
from harness.judge.analysis import analyse
from harness.judge.classify import evaluate
from harness.judge.early import EarlyJudge
from harness.records.log import RECORD_SCHEMA
from harness.records.record import ErrorClass, RequestRecord
from harness.spec.load import LoadSpec
from harness.spec.policy import Policy

CHUNKS = 16
NEW = 500
POLICY = Policy.model_validate(
    {
        "name": "looks",
        "goodput": {"e2el": "2s"},
        "objectives": [
            {"name": "p50", "metric": "e2el", "stat": "p50", "target": "500ms"},
            {"name": "p99", "metric": "e2el", "stat": "p99", "target": "2s"},
            {"name": "ttft", "metric": "ttft", "stat": "p99", "target": "1s"},
            {"name": "itl", "metric": "itl", "stat": "p90", "target": "50ms"},
            {"name": "errors", "metric": "error_rate", "stat": "value", "target": "1%"},
        ],
    }
)
LOAD = LoadSpec.model_validate(
    {
        "duration_s": 3600,
        "early_stop": {"every_s": 10, "min_s": 30},
        "arrival": {"type": "poisson", "rate": 10},
    }
)


def make_records(n: int, start: int, rng: np.random.Generator) -> list[RequestRecord]:
    out = []
    sent = start * 0.01
    for i in range(start, start + n):
        sent += 0.01
        ttft = float(rng.lognormal(np.log(0.1), 0.3))
        gaps = rng.lognormal(np.log(0.02), 0.3, CHUNKS - 1)
        chunks = tuple((sent + ttft + np.concatenate([[0.0], np.cumsum(gaps)])).tolist())
        failed = rng.random() < 0.001
        out.append(
            RequestRecord(
                request_id=i, worker="w", phase="measure", stream=True, wall_sent=1.7e9 + sent,
                t_intended=sent, t_sent=sent, t_first=None if failed else chunks[0],
                t_last=None if failed else chunks[-1], t_done=chunks[-1],
                chunk_times=() if failed else chunks, prompt_tokens=100,
                output_tokens=None if failed else CHUNKS, status=500 if failed else 200,
                error=ErrorClass.HTTP_STATUS if failed else None,
            )
        )  # fmt: skip
    return out


def old_look(records: list[RequestRecord]) -> None:
    """The look before tallies: every record to Arrow, analysed and judged again."""
    table = pa.Table.from_pylist([r.to_row() for r in records], schema=RECORD_SCHEMA)
    metrics = analyse(table, 0.0, records[-1].t_done, POLICY.goodput)
    evaluate(POLICY, metrics)


def look_costs(n: int) -> tuple[float, float]:
    """Seconds of one look after n records: with tallies, and as before (best of three)."""
    rng = np.random.default_rng(1)
    taken = make_records(n, 0, rng)
    new = make_records(NEW, n, rng)
    best_new, best_old = float("inf"), float("inf")
    for _ in range(3):
        judge = EarlyJudge(POLICY, LOAD)
        for record in taken:
            judge.observe(record)
        judge(0.0)  # the earlier looks: everything so far folded in
        for record in new:
            judge.observe(record)
        start = time.perf_counter()
        judge(0.0)
        best_new = min(best_new, time.perf_counter() - start)
    for _ in range(3 if n <= 50_000 else 1):
        start = time.perf_counter()
        old_look(taken + new)
        best_old = min(best_old, time.perf_counter() - start)
    return best_new, best_old


def loop_lag(n: int, looking: bool, seconds: float = 3.0) -> tuple[float, float]:
    """p99 and max lateness (ms) of 1 ms ticks on the gevent loop, with looks every 100 ms
    in the thread pool folding NEW records each (after n taken) when ``looking``."""
    rng = np.random.default_rng(2)
    judge = EarlyJudge(POLICY, LOAD)
    for record in make_records(n, 0, rng):
        judge.observe(record)
    judge(0.0)
    batches = [make_records(NEW, n + k * NEW, rng) for k in range(int(seconds / 0.1) + 1)]
    late: list[float] = []
    done = gevent.event.Event()

    def ticker() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            due = time.perf_counter() + 0.001
            gevent.sleep(0.001)
            late.append(time.perf_counter() - due)
        done.set()

    def looker() -> None:
        for batch in batches:
            if done.is_set():
                return
            for record in batch:
                judge.observe(record)
            gevent.get_hub().threadpool.apply(judge, (0.0,))
            gevent.sleep(0.1)

    jobs = [gevent.spawn(ticker)] + ([gevent.spawn(looker)] if looking else [])
    gevent.joinall(jobs)
    lag = np.asarray(late) * 1000
    return float(np.percentile(lag, 99)), float(lag.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 200_000])
    args = parser.parse_args()
    print(
        "| records taken | look with tallies | look as before (all records) "
        "| loop lag p99 / max, no looks | with looks every 100 ms |"
    )
    print("|---:|---:|---:|---:|---:|")
    for n in args.sizes:
        new, old = look_costs(n)
        quiet = loop_lag(n, looking=False)
        busy = loop_lag(n, looking=True)
        print(
            f"| {n:,} | {new * 1000:.1f} ms | {old * 1000:.0f} ms | "
            f"{quiet[0]:.2f} / {quiet[1]:.2f} ms | {busy[0]:.2f} / {busy[1]:.2f} ms |"
        )


if __name__ == "__main__":
    main()
