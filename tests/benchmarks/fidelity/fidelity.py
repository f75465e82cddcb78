"""Client fidelity and throughput: the harness client beside aiohttp + uvloop, same server.

For each concurrency, each client runs alone in its own process (pinned to one core, the
stamped server pinned to another) against a fresh `stamped_server.py`, closed loop, for a
warm-up and then a measuring window. Reported per client: content chunks per second, the
client's CPU, chunks per CPU-second (the throughput one client core can give), and the
delay the client adds to what it measures, per chunk: arrival time - the server's send
time of the same chunk (first chunk: TTFT error; later chunks: ITL error). Ratios are
harness / reference.

    .venv/bin/python tests/benchmarks/fidelity/fidelity.py [--streams 64 256 512]
        [--warmup 2] [--duration 10] [--reps 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLIENTS = {"harness": HERE / "harness_side.py", "reference": HERE / "reference_side.py"}
ROOT = HERE.parents[2]


@dataclass(frozen=True)
class Result:
    """One client's run at one concurrency."""

    chunks: int
    wall_s: float
    cpu_s: float
    server_cpu: float  # fraction of a core, over the server's life
    ttft_ms: tuple[float, float]  # p50, p99 of first-chunk delay
    itl_ms: tuple[float, float]  # p50, p99 of later-chunk delay
    failed: int
    unmatched: int

    @property
    def per_cpu_s(self) -> float:
        return self.chunks / self.cpu_s


def _cores() -> tuple[set[int] | None, set[int] | None]:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    return {cores[0]}, {cores[1]}


def _start(args: list[str], cores: set[int] | None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT)
    if cores is not None:
        os.sched_setaffinity(proc.pid, cores)
    return proc


def run_one(client: str, streams: int, warmup_s: float, duration_s: float) -> Result:
    client_cores, server_cores = _cores()
    with tempfile.TemporaryDirectory() as tmp:
        port_file, log_file, out = Path(tmp, "port"), Path(tmp, "log.npz"), Path(tmp, "out.npz")
        server_args = [str(HERE / "stamped_server.py"), str(port_file), str(log_file)]
        server = _start(server_args, server_cores)
        t_server = time.monotonic()
        try:
            deadline = time.monotonic() + 10
            while not port_file.exists() or not port_file.read_text():
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("stamped server did not start")
                time.sleep(0.02)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            args = [url, str(streams), str(warmup_s), str(duration_s), str(out)]
            proc = _start([str(CLIENTS[client]), *args], client_cores)
            if proc.wait(timeout=warmup_s + duration_s + 60) != 0:
                raise SystemExit(f"{client} client failed with {proc.returncode}")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        server_life = time.monotonic() - t_server
        got, sent = np.load(out), np.load(log_file)
        return _result(got, sent, server_life)


def _result(got: np.lib.npyio.NpzFile, sent: np.lib.npyio.NpzFile, server_life: float) -> Result:
    sent_key = sent["rid"] * 64 + sent["idx"]
    order = np.argsort(sent_key)
    sent_key, t_send = sent_key[order], sent["t_send"][order]
    key = got["rid"] * 64 + got["idx"]
    pos = np.clip(np.searchsorted(sent_key, key), 0, len(sent_key) - 1)
    matched = sent_key[pos] == key
    delay_ms = (got["t_arrival"][matched] - t_send[pos[matched]]) * 1e3
    first = got["idx"][matched] == 0

    def p50_p99(values: np.ndarray) -> tuple[float, float]:
        if not len(values):
            return float("nan"), float("nan")
        return float(np.percentile(values, 50)), float(np.percentile(values, 99))

    return Result(
        chunks=len(key),
        wall_s=float(got["wall_s"]),
        cpu_s=float(got["cpu_s"]),
        server_cpu=float(sent["cpu_s"]) / server_life,
        ttft_ms=p50_p99(delay_ms[first]),
        itl_ms=p50_p99(delay_ms[~first]),
        failed=int(got["failed"]),
        unmatched=int((~matched).sum()),
    )


def _median(results: list[Result]) -> Result:
    """Per-field medians over repeats (a typical run, not one of them)."""

    def med(get: Callable[[Result], float]) -> float:
        return float(statistics.median(get(r) for r in results))

    return Result(
        chunks=int(med(lambda r: r.chunks)),
        wall_s=med(lambda r: r.wall_s),
        cpu_s=med(lambda r: r.cpu_s),
        server_cpu=med(lambda r: r.server_cpu),
        ttft_ms=(med(lambda r: r.ttft_ms[0]), med(lambda r: r.ttft_ms[1])),
        itl_ms=(med(lambda r: r.itl_ms[0]), med(lambda r: r.itl_ms[1])),
        failed=max(r.failed for r in results),
        unmatched=max(r.unmatched for r in results),
    )


def _row(streams: int, name: str, runs: list[Result]) -> str:
    m = _median(runs)
    per_cpu = [r.per_cpu_s for r in runs]
    return (
        f"| {streams} | {name} | {m.chunks / m.wall_s:,.0f} | {m.cpu_s / m.wall_s:.0%} | "
        f"{statistics.median(per_cpu):,.0f} ({min(per_cpu):,.0f}–{max(per_cpu):,.0f}) | "
        f"{1e6 * m.cpu_s / m.chunks:.1f} | {m.ttft_ms[0]:.2f} / {m.ttft_ms[1]:.2f} | "
        f"{m.itl_ms[0]:.2f} / {m.itl_ms[1]:.2f} | {m.failed} |"
    )


def _ratio_row(streams: int, harness: list[Result], reference: list[Result]) -> str:
    h, r = _median(harness), _median(reference)
    per_cpu = statistics.median(x.per_cpu_s for x in harness) / statistics.median(
        x.per_cpu_s for x in reference
    )
    return (
        f"| {streams} | **harness / reference** | "
        f"{h.chunks / h.wall_s / (r.chunks / r.wall_s):.2f}× | "
        f"{h.cpu_s / h.wall_s / (r.cpu_s / r.wall_s):.2f}× | **{per_cpu:.2f}×** | "
        f"{h.cpu_s / h.chunks / (r.cpu_s / r.chunks):.2f}× | "
        f"{h.ttft_ms[0] / r.ttft_ms[0]:.2f}× / {h.ttft_ms[1] / r.ttft_ms[1]:.2f}× | "
        f"{h.itl_ms[0] / r.itl_ms[0]:.2f}× / {h.itl_ms[1] / r.itl_ms[1]:.2f}× | |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    client_cores, server_cores = _cores()
    print(
        f"client fidelity: 20 chunks 10 ms apart per stream, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s window, {args.reps} run(s) each; client on cores {client_cores}, "
        f"server on {server_cores}",
        flush=True,
    )
    lines = [
        "| streams | client | chunks/s | client CPU | chunks per CPU-s (range) | CPU µs/chunk "
        "| TTFT error p50 / p99 ms | ITL error p50 / p99 ms | failed requests |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for streams in args.streams:
        runs: dict[str, list[Result]] = {name: [] for name in CLIENTS}
        for rep in range(args.reps):
            for name in CLIENTS if rep % 2 == 0 else reversed(CLIENTS):
                res = run_one(name, streams, args.warmup, args.duration)
                runs[name].append(res)
                print(
                    f"  {streams:4d} {name:9s} {res.per_cpu_s:8,.0f} chunks/CPU-s "
                    f"TTFT p99 {res.ttft_ms[1]:6.2f} ms ITL p99 {res.itl_ms[1]:6.2f} ms "
                    f"server CPU {res.server_cpu:.0%} unmatched {res.unmatched}",
                    flush=True,
                )
        lines += [_row(streams, n, runs[n]) for n in CLIENTS]
        lines.append(_ratio_row(streams, runs["harness"], runs["reference"]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
