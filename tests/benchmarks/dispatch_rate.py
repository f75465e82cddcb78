"""How closely the open-loop driver keeps a Poisson schedule: 1 000 arrivals per rate.

Runs `harness run` (Locust, gevent, the real client) against the built-in simulator and
compares three rates per target: the target itself, the schedule's own realised rate (a
Poisson sample of 1 000 arrivals differs from its mean by about 3 % by nature), and the
achieved send rate. Dispatch error = achieved / scheduled - 1 is what the harness controls.

    .venv/bin/python tests/benchmarks/dispatch_rate.py [--arrivals N] [RATE ...]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.cli import only_run_dir, run_cli  # noqa: E402

from harness.load.target import simulator  # noqa: E402
from harness.records.log import read_frame  # noqa: E402

ARRIVALS = 1000


def measure(rate: float, arrivals: int = ARRIVALS) -> dict[str, float]:
    # Short outputs on a fast engine keep the target far from saturation at every rate.
    sim = {"step_base_s": 0.002, "per_seq_s": 0.0, "max_num_seqs": 1024}
    with tempfile.TemporaryDirectory() as out, simulator(sim) as url:
        proc = run_cli(
            "run", "scenarios/smoke.yaml", "--target", url, "--out", out,
            "--set", f"load.arrival={{type: poisson, rate: {rate}, max_concurrency: 1024}}",
            "--set", f"load.max_requests={arrivals}", "--set", "load.warmup_s=0",
            "--set", f"load.duration_s={arrivals / rate * 3:.0f}",
            "--set", "workload.max_tokens=4", "--set", "workload.prompt_tokens=16",
            timeout=600,
        )  # fmt: skip
        if proc.returncode not in (0, 1, 3):
            raise SystemExit(proc.stderr)
        df = read_frame(only_run_dir(Path(out)))
    sent = np.sort(df["t_sent"].to_numpy())
    intended = np.sort(df["t_intended"].to_numpy())
    lag = (df["t_sent"] - df["t_intended"]).to_numpy()
    n = len(df)
    scheduled = (n - 1) / (intended[-1] - intended[0])
    achieved = (n - 1) / (sent[-1] - sent[0])
    return {
        "rate": rate,
        "n": n,
        "errors": int(df["error"].notna().sum()),
        "scheduled": scheduled,
        "achieved": achieved,
        "vs_target": achieved / rate - 1,
        "vs_schedule": achieved / scheduled - 1,
        "lag_p50_ms": float(np.percentile(lag, 50) * 1e3),
        "lag_p99_ms": float(np.percentile(lag, 99) * 1e3),
        "lag_max_ms": float(lag.max() * 1e3),
    }


def main(argv: list[str]) -> None:
    arrivals = ARRIVALS
    if argv[:1] == ["--arrivals"]:
        arrivals, argv = int(argv[1]), argv[2:]
    rates = [float(r) for r in argv] or [50.0, 200.0, 500.0]
    cpu = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"open-loop dispatch, {arrivals} arrivals per rate, {cpu} cores")
    print(
        "| target req/s | sent | errors | schedule's own rate | achieved | achieved vs target "
        "| achieved vs schedule | lag p50 | lag p99 | lag max |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rate in rates:
        m = measure(rate, arrivals)
        print(
            f"| {m['rate']:g} | {m['n']} | {m['errors']} | {m['scheduled']:.2f} | "
            f"{m['achieved']:.2f} | {m['vs_target']:+.2%} | {m['vs_schedule']:+.3%} | "
            f"{m['lag_p50_ms']:.2f} ms | {m['lag_p99_ms']:.2f} ms | {m['lag_max_ms']:.2f} ms |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
