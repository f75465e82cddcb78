"""Judging 10 million records with every interval, on one core (issue: under 5 seconds).

Builds a run of N records (8 chunks each: 70 million ITL gaps) in memory, pins the process
to one CPU, then times the judge's whole path from the Arrow table: `analyse` (every
metric, goodput) and `evaluate` on a policy with percentiles and their order-statistic
bounds on TTFT, TPOT, ITL and E2EL, a mean, the error rate (Clopper-Pearson), and rates
(Poisson). Prints the time of each step, best of three.

    .venv/bin/python tests/benchmarks/judge_scale.py [--records N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.synthetic import records

from harness.judge.analysis import analyse
from harness.judge.classify import evaluate
from harness.spec.policy import Policy

CHUNKS = 8
POLICY = Policy.model_validate(
    {
        "name": "scale",
        "goodput": {"ttft": "500ms", "e2el": "2s"},
        "objectives": [
            {"name": "ttft-p50", "metric": "ttft", "stat": "p50", "target": "200ms"},
            {"name": "ttft-p99", "metric": "ttft", "stat": "p99", "target": "500ms"},
            {"name": "tpot-p90", "metric": "tpot", "stat": "p90", "target": "50ms"},
            {"name": "itl-p99", "metric": "itl", "stat": "p99", "target": "100ms"},
            {"name": "itl-p99.9", "metric": "itl", "stat": "p99.9", "target": "200ms"},
            {"name": "e2el-p50", "metric": "e2el", "stat": "p50", "target": "500ms",
             "alert": "1s"},
            {"name": "e2el-p99", "metric": "e2el", "stat": "p99", "target": "2s", "alert": "5s"},
            {"name": "e2el-mean", "metric": "e2el", "stat": "mean", "target": "1s"},
            {"name": "errors", "metric": "error_rate", "stat": "value", "target": "0.1%",
             "alert": "1%"},
            {"name": "goodput", "metric": "goodput", "stat": "value", "target": "100/s"},
            {"name": "rate", "metric": "request_rate", "stat": "value", "target": "100/s"},
        ],
    }
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    table = records(args.records, CHUNKS, seconds=3600.0, error_share=0.0005)
    best = {"analyse": float("inf"), "evaluate": float("inf"), "total": float("inf")}
    for _ in range(3):
        t0 = time.perf_counter()
        metrics = analyse(table, 0.0, 3600.0, POLICY.goodput)
        t1 = time.perf_counter()
        verdict = evaluate(POLICY, metrics)
        t2 = time.perf_counter()
        best = {
            "analyse": min(best["analyse"], t1 - t0),
            "evaluate": min(best["evaluate"], t2 - t1),
            "total": min(best["total"], t2 - t0),
        }
    bounded = sum(1 for o in verdict.objectives if o.interval is not None)
    print(
        f"{args.records:,} records ({args.records * (CHUNKS - 1):,} ITL gaps), one core: "
        f"analyse {best['analyse']:.2f} s + evaluate {best['evaluate']:.2f} s = "
        f"{best['total']:.2f} s; {bounded}/{len(verdict.objectives)} objectives with "
        f"intervals; decision {verdict.decision.value}"
    )


if __name__ == "__main__":
    main()
