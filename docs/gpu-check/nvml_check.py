"""Check the NVML sampler against a real NVIDIA GPU: idle, a bf16 matmul load, idle again.

The unit tests fake pynvml; this is the one run that shows the numbers are real (units,
utilization under load, power and energy moving together). It needs only python3 with pynvml
and torch, not the harness's dependencies. From the repository root:

    PYTHONPATH=. python3 docs/gpu-check/nvml_check.py --out docs/gpu-check/<gpu-name>

Writes samples.csv, info.json and summary.md to --out. Exit 0 once the run completes, even when
an expectation fails (read the PASS/FAIL lines); 1 where the sampler finds no GPU; 2 where torch
or CUDA is missing.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.collectors.nvml import NvmlSampler, decode_throttle
from harness.collectors.series import Point

PHASES = ("idle-before", "load", "idle-after")


@dataclass
class Recorder:
    """The sampler's sink: tags each batch with the phase the script is in when it arrives."""

    phase: str = "setup"
    rows: list[tuple[str, Point]] = field(default_factory=list)
    starts: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, points: list[Point]) -> None:
        with self.lock:
            self.rows.extend((self.phase, p) for p in points)

    def enter(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
            self.starts[phase] = time.time()


@dataclass
class PhaseStats:
    samples: int
    util_mean: float | None
    util_max: float | None
    power_mean_w: float | None
    temp_max_c: float | None
    sm_clock_mean_mhz: float | None
    energy_j: float | None
    seconds: float
    throttle: list[str]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="directory for the three outputs")
    p.add_argument("--idle-s", type=float, default=15.0, help="each idle phase (s)")
    p.add_argument("--load-s", type=float, default=30.0, help="the matmul load phase (s)")
    p.add_argument("--interval-s", type=float, default=0.5, help="sampling interval (s)")
    p.add_argument("--size", type=int, default=8192, help="square matmul size")
    p.add_argument(
        "--settle-s",
        type=float,
        default=1.0,
        help="seconds at each phase start left out of means and maxima: NVML utilization\n"
        "averages over up to a second and clocks and power take a moment to move",
    )
    return p.parse_args(argv)


def load_torch() -> Any:
    """torch, imported only here: it is no dependency of the harness."""
    try:
        return importlib.import_module("torch")
    except ImportError:
        return None


def loaded_gpu(torch: Any, info: dict[str, Any]) -> tuple[int, str]:
    """The NVML index of torch's cuda:0 (NVML counts in PCI order, CUDA may not), and how known."""
    try:
        uuid = str(torch.cuda.get_device_properties(0).uuid)
    except Exception:
        uuid = ""
    for g in info["gpus"]:
        if uuid and str(g["uuid"] or "").removeprefix("GPU-") == uuid.removeprefix("GPU-"):
            return int(g["index"]), f"matched by UUID {g['uuid']}"
    first = int(info["gpus"][0]["index"])
    return first, "assumed: torch did not report a UUID that NVML lists"


def run_load(torch: Any, size: int, seconds: float) -> tuple[int, float]:
    """Back-to-back matmuls on cuda:0 for ``seconds``; (matmuls done, achieved TFLOP/s)."""
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    a = torch.randn(size, size, device="cuda:0", dtype=dtype)
    b = torch.randn(size, size, device="cuda:0", dtype=dtype)
    c = torch.empty(size, size, device="cuda:0", dtype=dtype)
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for _ in range(10):  # keep the queue full; sync so the loop ends on time
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize()
        n += 10
    elapsed = time.monotonic() - t0
    return n, 2 * size**3 * n / elapsed / 1e12


def warm_up(torch: Any, size: int) -> None:
    """CUDA context and cuBLAS set up before idle-before, so idle means 'context loaded'."""
    run_load(torch, size, 0.5)


def phase_stats(
    rows: list[tuple[str, Point]], phase: str, series: str, start: float, settle: float
) -> PhaseStats:
    pts = [p for ph, p in rows if ph == phase and p.series == series]

    def values(metric: str, settled: bool = True) -> list[float]:
        return [
            p.value for p in pts if p.metric == metric and (not settled or p.wall >= start + settle)
        ]

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    util = values("gpu.utilization")
    clocks = values("gpu.sm_clock")
    mask = 0
    for m in values("gpu.throttle_reasons", settled=False):
        mask |= int(m)
    walls = [p.wall for p in pts]
    return PhaseStats(
        samples=len({p.wall for p in pts}),
        util_mean=mean(util),
        util_max=max(util) if util else None,
        power_mean_w=mean(values("gpu.power")),
        temp_max_c=max(values("gpu.temperature", settled=False), default=None),
        sm_clock_mean_mhz=None if not clocks else sum(clocks) / len(clocks) / 1e6,
        energy_j=phase_energy(rows, phase, series),
        seconds=(max(walls) - min(walls)) if walls else 0.0,
        throttle=decode_throttle(mask),
    )


def phase_energy(rows: list[tuple[str, Point]], phase: str, series: str) -> float | None:
    """Counter at the phase's last reading minus the reading just before the phase (so phases
    tile the run), or its own first reading where nothing came before."""
    energy = sorted(
        (
            (p.wall, ph, p.value)
            for ph, p in rows
            if p.series == series and p.metric == "gpu.energy"
        ),
    )
    inside = [i for i, (_, ph, _) in enumerate(energy) if ph == phase]
    if len(inside) < 1 or (inside[0] == 0 and len(inside) < 2):
        return None
    base = energy[inside[0] - 1][2] if inside[0] > 0 else energy[inside[0]][2]
    return energy[inside[-1]][2] - base


def fmt(x: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x * scale:.{digits}f}"


def verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "N/A "}[ok]


def expectations(stats: dict[str, PhaseStats], energy_series: list[float]) -> list[str]:
    """The PASS/FAIL lines; N/A where the metric was not collected (never judged on a 0)."""
    load, before, after = stats["load"], stats["idle-before"], stats["idle-after"]
    lines: list[str] = []

    u = load.util_mean
    lines.append(
        f"{verdict(None if u is None else u >= 0.9)} utilization under load >= 90 % mean"
        f" (got {fmt(u, 100)} %)"
    )
    idle = [s.util_mean for s in (before, after)]
    ok = None if None in idle else all(x is not None and x <= 0.1 for x in idle)
    lines.append(
        f"{verdict(ok)} idle utilization <= 10 % mean"
        f" (idle-before {fmt(idle[0], 100)} %, idle-after {fmt(idle[1], 100)} %)"
    )
    idle_w = [s.power_mean_w for s in (before, after) if s.power_mean_w is not None]
    lp = load.power_mean_w
    ok = None if lp is None or not idle_w else lp > max(idle_w)
    lines.append(
        f"{verdict(ok)} power under load > idle power"
        f" (load {fmt(lp)} W, idle max {fmt(max(idle_w) if idle_w else None)} W)"
    )
    if len(energy_series) < 2:
        ok = None
    else:
        steps = [b - a for a, b in itertools.pairwise(energy_series)]
        ok = all(s >= 0 for s in steps) and energy_series[-1] > energy_series[0]
    total = energy_series[-1] - energy_series[0] if len(energy_series) >= 2 else None
    lines.append(f"{verdict(ok)} energy rising (never down, {fmt(total)} J over the run)")
    return lines


def write_outputs(
    out: Path,
    rec: Recorder,
    info: dict[str, Any],
    t_start: float,
    report: str,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "samples.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["phase", "wall", "t", "gpu", "metric", "value"])
        for phase, p in sorted(rec.rows, key=lambda r: (r[1].wall, r[1].series, r[1].metric)):
            gpu = p.series.removeprefix("gpu=")
            w.writerow(
                [phase, f"{p.wall:.3f}", f"{p.wall - t_start:.3f}", gpu, p.metric, repr(p.value)]
            )
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(report, encoding="utf-8")


def summary(
    args: argparse.Namespace,
    rec: Recorder,
    info: dict[str, Any],
    loaded: tuple[int, str],
    load_result: tuple[int, float],
    torch_version: str,
) -> tuple[str, list[str]]:
    gpus = [int(g["index"]) for g in info["gpus"]]
    gpu_list = ", ".join(f"{g['index']}: {g['name']} ({g['uuid']})" for g in info["gpus"])
    lines = [
        "# NVML sampler check",
        "",
        f"- GPUs: {gpu_list}",
        f"- driver {info['driver']}, CUDA {info['cuda_driver_version']},"
        f" NVML {info['nvml_version']}, torch {torch_version}",
        f"- load on GPU {loaded[0]} ({loaded[1]}): {args.size}x{args.size} matmuls,"
        f" {load_result[0]} done, {load_result[1]:.1f} TFLOP/s",
        f"- phases: idle {args.idle_s:g} s, load {args.load_s:g} s, idle {args.idle_s:g} s;"
        f" sampled every {args.interval_s:g} s; means and maxima of utilization, power and"
        f" clock leave out the first {args.settle_s:g} s of each phase",
        f"- sampler: {info['errors'] or 'no errors'}",
        "",
    ]
    stats_loaded: dict[str, PhaseStats] = {}
    for phase in PHASES:
        lines += [
            f"## {phase}",
            "",
            "| GPU | samples | util mean % | util max % | power mean W | temp max °C"
            " | SM clock mean MHz | energy J | throttle reasons seen |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for g in gpus:
            st = phase_stats(rec.rows, phase, f"gpu={g}", rec.starts[phase], args.settle_s)
            if g == loaded[0]:
                stats_loaded[phase] = st
            lines.append(
                f"| {g} | {st.samples} | {fmt(st.util_mean, 100)} | {fmt(st.util_max, 100)}"
                f" | {fmt(st.power_mean_w)} | {fmt(st.temp_max_c, digits=0)}"
                f" | {fmt(st.sm_clock_mean_mhz, digits=0)} | {fmt(st.energy_j)}"
                f" | {', '.join(st.throttle) or 'none'} |"
            )
        lines.append("")
    load = stats_loaded["load"]
    if load.energy_j is not None and load.power_mean_w is not None:
        span = rec.starts["idle-after"] - rec.starts["load"]
        lines += [
            f"Cross-check on GPU {loaded[0]}: load energy {load.energy_j:.0f} J against mean"
            f" power x phase length {load.power_mean_w * span:.0f} J.",
            "",
        ]
    series = f"gpu={loaded[0]}"
    energy = [
        p.value
        for _, p in sorted(rec.rows, key=lambda r: r[1].wall)
        if p.series == series and p.metric == "gpu.energy"
    ]
    checks = expectations(stats_loaded, energy)
    lines += ["## Expectations", "", "```", *checks, "```", ""]
    return "\n".join(lines), checks


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # the reason is printed below; keep logging's last-resort handler from printing it twice
    logging.getLogger("harness.collectors.nvml").addHandler(logging.NullHandler())
    rec = Recorder()
    sampler = NvmlSampler(interval_s=args.interval_s, sink=rec)
    t_start = time.time()
    if not sampler.start():
        print(f"nvml_check: {sampler.unavailable}", file=sys.stderr)
        return 1
    try:
        torch = load_torch()
        if torch is None:
            print(
                "nvml_check: torch is not installed (pip install torch): no load to run",
                file=sys.stderr,
            )
            return 2
        if not torch.cuda.is_available():
            print("nvml_check: torch sees no CUDA device: no load to run", file=sys.stderr)
            return 2
        loaded = loaded_gpu(torch, sampler.info())
        print(f"nvml_check: loading GPU {loaded[0]} ({loaded[1]})")
        warm_up(torch, args.size)
        rec.enter("idle-before")
        print(f"nvml_check: idle {args.idle_s:g} s")
        time.sleep(args.idle_s)
        rec.enter("load")
        print(f"nvml_check: load {args.load_s:g} s")
        result = run_load(torch, args.size, args.load_s)
        rec.enter("idle-after")
        print(f"nvml_check: idle {args.idle_s:g} s")
        time.sleep(args.idle_s)
    finally:
        sampler.stop()
    info = sampler.info()
    text, checks = summary(args, rec, info, loaded, result, str(torch.__version__))
    write_outputs(args.out, rec, info, t_start, text)
    print(text)
    print(f"nvml_check: wrote {args.out}/samples.csv, info.json, summary.md")
    for line in checks:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
