"""The whole `harness run` beside benchmark clients: CPU per chunk and timing error end to end.

What a user runs is `harness run`, not the client's hot path: this measures the command as
a process (start-up, workload, records, live statistics, Locust, the guard) against the
stamped server (`stamped_server.py`: TTFT 50 ms, then 64 ± 16 chunks 20 ms apart, the
length fixed by the request id so closed-loop streams do not stay in step; every chunk's
send time logged), beside two clients in the same run, each alone on its core:

- reference: aiohttp on uvloop (`reference_side.py`), the fidelity benchmark's reference;
- vllm: the per-request code of `vllm bench serve` (`vllm_side.py`).

Per client and concurrency, closed loop (N streams) and open loop (Poisson at the closed
loop's mean rate): content chunks per CPU-second over a mid-run window (`harness run`: the
CPU of its process tree from /proc, sampled every 20 ms and interpolated at the run's own
measured-window marks; chunks from its records), and per-chunk error = the client's stamp
minus the server's send stamp of the same chunk (`harness run` sends `X-Request-Id:
<run>-<request id>`, which the server logs chunks by). For `harness run` also its event
loop's lag (the load guard), and the CPU and wall time from exec to the load's first
request. With --profile, a py-spy sampling of the run's measured window, each sample put in
the stage of the request's work it was in (prompt, request build, send/read, record, sink,
Locust reporting, ...).

    .venv/bin/python tests/benchmarks/fidelity/whole_run.py [--streams 64 128 256]
        [--loops closed open] [--warmup 3] [--duration 10] [--reps 2] [--chunks 64]
        [--profile]

--chunks changes the answers' length at the same pace: run at two lengths, the CPU per
request and per chunk of each client separate (CPU/s = a · requests/s + b · chunks/s).
WHOLE_RUN_PERF=<folder> keeps a `perf record` (CPU clock, call graphs, kernel included) of
each client over its window; with WHOLE_RUN_STAT=1 instead `perf stat` counts (epoll waits,
recvs, context switches, page faults, CPU), with WHOLE_RUN_STRACE=1 (or strace options) strace.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
PY = sys.executable
TTFT_S, ITL_S, CHUNKS = 0.05, 0.02, 64
SPREAD = 0.25  # each request's length: CHUNKS ± 25 %, fixed by its id (stamped_server.py)
MAX_TOKENS = round(CHUNKS * (1 + SPREAD))
CLIENTS = {"reference": HERE / "reference_side.py", "vllm": HERE / "vllm_side.py",
           "client": HERE / "harness_side.py"}  # fmt: skip
# "client": the harness's client alone (closed loop only), the part of the run that is not
# overhead of the run; not run by default.
DEFAULT_CLIENTS = ["harness", "reference", "vllm"]
TICK = os.sysconf("SC_CLK_TCK")
IDX = 4096  # key = request id * IDX + chunk index
KEPT_STACKS = Path(tempfile.gettempdir(), "whole-run-stacks.txt")  # the last profile's samples

POLICY = """schema: 1
name: bench
objectives:
  - {name: e2el-p50, metric: e2el, stat: p50, target: 10s, alert: 20s}
"""


def scenario_yaml(url: str, streams: int, loop: str, warmup: float, duration: float) -> str:
    if loop == "closed":
        arrival = f"{{type: concurrency, users: {streams}}}"
    else:
        arrival = f"{{type: poisson, rate: {rate_of(streams):.3f}, max_concurrency: {2 * streams}}}"
    return f"""schema: 1
name: whole-run
target: {{url: "{url}/v1", api: chat, stream: true, model: bench}}
workload: {{type: synthetic, prompt_tokens: 128, max_tokens: {MAX_TOKENS}, seed: 1}}
load:
  arrival: {arrival}
  warmup_s: {warmup}
  duration_s: {duration}
  drain_timeout_s: 30
collect: {{servers: [], gpu: "off"}}
policy: policy.yaml
"""


def rate_of(streams: int) -> float:
    """The open loop's rate: the closed loop's mean (streams / one request's duration)."""
    return streams / (TTFT_S + (CHUNKS - 1) * ITL_S)


@dataclass
class Measured:
    """One client's run at one load."""

    chunks: int
    wall_s: float
    cpu_s: float
    ttft_ms: tuple[float, float]
    itl_ms: tuple[float, float]
    failed: int
    unmatched: int
    lag_ms: tuple[float, float] | None = None  # harness: event-loop lag p99, max
    startup: tuple[float, float] | None = None  # harness: CPU s, wall s to the first request
    stages: dict[str, float] = field(default_factory=dict)
    steal: float | None = None  # the client core's time taken by the hypervisor, share of wall

    @property
    def per_cpu_s(self) -> float:
        return self.chunks / self.cpu_s if self.cpu_s > 0 else float("nan")


class TreeCpu:
    """CPU seconds of a process and its descendants, sampled from /proc every `every_s`."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _cpu(self, pid: int, own: bool) -> float:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
                kids = [int(k) for k in fh.read().split()]
        except (OSError, ValueError, IndexError):
            return 0.0
        ticks = int(fields[11]) + int(fields[12])  # utime, stime
        if own:  # children already waited for
            ticks += int(fields[13]) + int(fields[14])
        return ticks / TICK + sum(self._cpu(k, True) for k in kids)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), self._cpu(self.pid, True)))
            self._stop.wait(self.every_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> float:
        ts, cpu = zip(*self.samples, strict=True)
        return float(np.interp(t, ts, cpu))


def _cores() -> tuple[set[int] | None, set[int] | None]:
    cores = sorted(os.sched_getaffinity(0))
    return ({cores[0]}, {cores[1]}) if len(cores) >= 2 else (None, None)


def _steal_s(cores: set[int] | None) -> tuple[float, float]:
    """(now, the hypervisor's steal time so far on these cores, in seconds) from /proc/stat:
    a run whose core was taken away from it shows its stalls here, whichever client ran."""
    total = 0
    with open("/proc/stat", encoding="ascii") as stat:
        for line in stat:
            name, *fields = line.split()
            if (cores is None and name == "cpu") or (
                cores is not None and name.startswith("cpu") and name[3:].isdigit()
                and int(name[3:]) in cores
            ):  # fmt: skip
                total += int(fields[7]) if len(fields) > 7 else 0
    return time.monotonic(), total / TICK


def _steal_share(start: tuple[float, float], cores: set[int] | None) -> float:
    end = _steal_s(cores)
    return (end[1] - start[1]) / max(end[0] - start[0], 1e-9)


def _spawn(
    args: list[str], cores: set[int] | None, cwd: Path = ROOT, **kw: object
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, cwd=cwd, **kw)  # type: ignore[call-overload]
    if cores is not None:
        os.sched_setaffinity(proc.pid, cores)
    return proc  # type: ignore[no-any-return]


class Server:
    """The stamped server on its own core, for one client's run."""

    def __init__(self, tmp: Path) -> None:
        _, cores = _cores()
        self.port_file, self.log_file = tmp / "port", tmp / "sent.npz"
        args = [PY, str(HERE / "stamped_server.py"), str(self.port_file), str(self.log_file),
                str(CHUNKS), str(ITL_S), str(TTFT_S), str(SPREAD)]  # fmt: skip
        self.proc = _spawn(args, cores)
        deadline = time.monotonic() + 10
        while not self.port_file.exists() or not self.port_file.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("stamped server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port_file.read_text()}"

    def sent(self) -> dict[str, npt.NDArray[np.float64]]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        with np.load(self.log_file) as log:
            return {k: log[k] for k in ("rid", "idx", "t_send")}


def errors_ms(
    rid: npt.NDArray[np.int64],
    idx: npt.NDArray[np.int64],
    t_arrival: npt.NDArray[np.float64],
    sent: dict[str, npt.NDArray[np.float64]],
) -> tuple[tuple[float, float], tuple[float, float], int]:
    """(TTFT error p50, p99), (ITL error p50, p99) in ms, and chunks the server never sent."""
    sent_key = sent["rid"].astype(np.int64) * IDX + sent["idx"].astype(np.int64)
    order = np.argsort(sent_key)
    sent_key, t_send = sent_key[order], sent["t_send"][order]
    key = rid * IDX + idx
    pos = np.clip(np.searchsorted(sent_key, key), 0, max(len(sent_key) - 1, 0))
    matched = sent_key[pos] == key if len(sent_key) else np.zeros(len(key), bool)
    delay = (t_arrival[matched] - t_send[pos[matched]]) * 1e3
    first = idx[matched] == 0

    def p50_p99(v: npt.NDArray[np.float64]) -> tuple[float, float]:
        if not len(v):
            return float("nan"), float("nan")
        return float(np.percentile(v, 50)), float(np.percentile(v, 99))

    return p50_p99(delay[first]), p50_p99(delay[~first]), int((~matched).sum())


def run_client(name: str, streams: int, loop: str, warmup: float, duration: float) -> Measured:
    cores, _ = _cores()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = Server(tmp)
        out = tmp / "out.npz"
        try:
            pool = streams if loop == "closed" else 2 * streams
            args = [PY, str(CLIENTS[name]), server.url, str(pool), str(warmup), str(duration),
                    str(out)]  # fmt: skip
            if loop == "open":
                args += ["--rate", f"{rate_of(streams):.3f}"]
            # vLLM's client draws its progress bar (as `vllm bench serve` does): not in the log.
            err = subprocess.DEVNULL if name == "vllm" else None
            steal0 = _steal_s(cores)
            proc = _spawn(args, cores, stderr=err)
            _perf(proc.pid, name, streams, loop, warmup + 1.0, duration - 2.0)
            if proc.wait(timeout=warmup + duration + 90) != 0:
                raise SystemExit(f"{name} client failed with {proc.returncode}")
            steal = _steal_share(steal0, cores)
        finally:
            sent = server.sent()
        with np.load(out) as got:
            ttft, itl, unmatched = errors_ms(got["rid"], got["idx"], got["t_arrival"], sent)
            return Measured(chunks=len(got["rid"]), wall_s=float(got["wall_s"]),
                            cpu_s=float(got["cpu_s"]), ttft_ms=ttft, itl_ms=itl,
                            failed=int(got["failed"]), unmatched=unmatched,
                            steal=steal)  # fmt: skip


def run_harness(
    streams: int,
    loop: str,
    warmup: float,
    duration: float,
    profile: bool = False,
    root: Path = ROOT,
) -> Measured:
    """`harness run` from the checkout at root (`python -m harness` finds its package there
    first), so --before can put another version of the harness beside this one."""
    cores, _ = _cores()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = Server(tmp)
        (tmp / "policy.yaml").write_text(POLICY, encoding="utf-8")
        scenario = tmp / "scenario.yaml"
        scenario.write_text(scenario_yaml(server.url, streams, loop, warmup, duration), "utf-8")
        out = tmp / "results"
        t_exec = time.monotonic()
        steal0 = _steal_s(cores)
        try:
            proc = _spawn([PY, "-m", "harness", "run", str(scenario), "--out", str(out),
                           "--no-report"], cores, cwd=root, stdout=subprocess.DEVNULL)  # fmt: skip
            cpu = TreeCpu(proc.pid)
            name = "harness" if root == ROOT else "before"
            _perf(proc.pid, name, streams, loop, warmup + 2.0, duration - 2.0)
            spy = _profile(proc.pid, out, warmup, duration) if profile else None
            code = proc.wait(timeout=warmup + duration + 120)
            steal = _steal_share(steal0, cores)
            cpu.stop()
            stacks = spy() if spy is not None else None
        finally:
            sent = server.sent()
        if code not in (0, 1, 3, 4):  # a verdict (4: the run judged invalid, e.g. saturated)
            raise SystemExit(f"harness run exited {code}")
        run_dir = next(out.iterdir())
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        tl, guard = manifest["timeline"], manifest["load"]["generators"]["local"]
        table = pq.read_table(run_dir / "records.parquet",
                              columns=["request_id", "chunk_times", "error", "error_detail",
                                       "phase"])  # fmt: skip
        lengths = np.array([len(c) for c in table["chunk_times"].to_pylist()], dtype=np.int64)
        rid = np.repeat(table["request_id"].to_numpy(), lengths)
        times = np.concatenate(
            [np.asarray(c, dtype=np.float64) for c in table["chunk_times"].to_pylist() if c]
            or [np.empty(0)]
        )
        idx = np.concatenate([np.arange(n) for n in lengths] or [np.empty(0, np.int64)])
        lo, hi = tl["measure_start"], tl["measure_end"]
        inside = (times >= lo) & (times < hi)
        ttft, itl, unmatched = errors_ms(rid[inside], idx[inside], times[inside], sent)
        errors = [(e, d, p) for e, d, p in zip(table["error"].to_pylist(),
                  table["error_detail"].to_pylist(), table["phase"].to_pylist(), strict=True)
                  if e is not None]  # fmt: skip
        for (error, detail, phase), n in Counter(errors).most_common(5):
            print(f"    failed: {n} x {error} in {phase}: {detail[:160]}", flush=True)
        failed = len(errors)
        return Measured(
            chunks=int(inside.sum()), wall_s=hi - lo, cpu_s=cpu.at(hi) - cpu.at(lo),
            ttft_ms=ttft, itl_ms=itl, failed=failed, unmatched=unmatched,
            lag_ms=(guard["lag_p99_s"] * 1e3, guard["lag_max_s"] * 1e3),
            startup=(cpu.at(tl["t_start"]), tl["t_start"] - t_exec), steal=steal,
            stages=classify(stacks) if stacks is not None else {},
        )  # fmt: skip


def _perf(pid: int, name: str, streams: int, loop: str, after_s: float, for_s: float) -> None:
    """With WHOLE_RUN_PERF=<folder>: `perf record` (CPU clock, call graphs) of the process
    over the window, kept as <folder>/<name>-<streams>-<loop>-<n>.data; with WHOLE_RUN_STAT
    `perf stat` counts (.stat) instead, with WHOLE_RUN_STRACE strace (.strace)."""
    folder = os.environ.get("WHOLE_RUN_PERF")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    n = len(list(Path(folder).glob(f"{name}-{streams}-{loop}-*.*")))
    dest = Path(folder, f"{name}-{streams}-{loop}-{n}.data")

    def record() -> None:
        time.sleep(after_s)
        if os.environ.get("WHOLE_RUN_STAT"):
            events = ("syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,"
                      "syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,"
                      "context-switches,page-faults,task-clock")  # fmt: skip
            cmd = ["perf", "stat", "-e", events, "-p", str(pid), "-o",
                   str(dest.with_suffix(".stat")), "--", "sleep", f"{for_s:g}"]  # fmt: skip
        elif os.environ.get("WHOLE_RUN_STRACE"):
            extra = os.environ["WHOLE_RUN_STRACE"].split()
            extra = ["-c"] if extra == ["1"] else extra
            cmd = ["timeout", "-s", "INT", f"{for_s:g}", "strace", *extra, "-f", "-p", str(pid),
                   "-o", str(dest.with_suffix(".strace"))]  # fmt: skip
        else:
            cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-p", str(pid),
                   "-o", str(dest), "--", "sleep", f"{for_s:g}"]  # fmt: skip
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)

    threading.Thread(target=record, daemon=True).start()


def _profile(pid: int, out: Path, warmup: float, duration: float) -> Callable[[], list[str]]:
    """Sample the run's measured window with py-spy (not pausing it); returns a collector."""
    spy_bin = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy_bin is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    raw = out.parent / "stacks.txt"
    box: dict[str, subprocess.Popen[bytes]] = {}

    def start() -> None:
        deadline = time.monotonic() + 60
        while not any(out.glob("*/records.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(warmup + 1.0)
        box["spy"] = subprocess.Popen(
            [spy_bin, "record", "--pid", str(pid), "--rate", "200",
             *([] if os.environ.get("WHOLE_RUN_NATIVE") else ["--nonblocking"]),
             *(["--native"] if os.environ.get("WHOLE_RUN_NATIVE") else []),
             "--duration", str(int(max(1, duration - 2))), "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    thread = threading.Thread(target=start, daemon=True)
    thread.start()

    def collect() -> list[str]:
        thread.join()
        box["spy"].wait(timeout=60)
        if not raw.exists():
            return []
        shutil.copy(raw, KEPT_STACKS)
        return raw.read_text(encoding="utf-8").splitlines()

    return collect


#: (stage, what in a stack puts a sample there): the innermost frame that matches decides.
STAGES: tuple[tuple[str, str], ...] = (
    ("sink: record log", "write (harness/records/log.py"),
    ("sink: live statistics", "observe (harness/load/progress.py"),
    ("sink: early-stop tallies", "observe (harness/judge/early.py"),
    ("record", "_make_record (harness/load/driver.py"),
    ("Locust reporting", "_report_to_locust (harness/load/driver.py"),
    ("request build", "request_body (harness/load/openai_api.py"),
    ("prompt", "session (harness/workload/"),
    ("prompt", "next_request (harness/workload/"),
    ("read: body and SSE", "_read_stream (harness/load/client.py"),
    ("send: request and headers", "request (geventhttpclient/client.py"),
    ("send: request and headers", "send (harness/load/client.py"),
    ("load guard", "(harness/load/guard.py"),
    ("progress line", "(harness/load/progress.py"),
    ("schedule", "(harness/load/driver.py"),
)
#: The stages that are the client's own work on the wire (the rest is overhead of the run).
WIRE = ("read: body and SSE", "send: request and headers", "event loop (waking readers)")


def classify(lines: Sequence[str]) -> dict[str, float]:
    """Share of the samples per stage. A sample in gevent's hub alone is the event loop
    (epoll, timers, the switch into the greenlet whose socket is readable): the wire's work;
    what no stage claims is other work (Locust's runner, ...)."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        stage = "other"
        for frame in reversed(frames):
            hit = next((name for name, mark in STAGES if mark in frame), None)
            if hit is not None:
                stage = hit
                break
        else:
            if any("gevent/hub.py" in f for f in frames):
                stage = WIRE[2]
        counts[stage] += int(n)
    total = sum(counts.values()) or 1
    return {k: v / total for k, v in counts.most_common()}


def _med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _row(streams: int, loop: str, name: str, runs: list[Measured]) -> str:
    per_cpu = [r.per_cpu_s for r in runs]
    lag = startup = "—"
    if runs[0].lag_ms is not None:
        lag = f"{_med([r.lag_ms[0] for r in runs if r.lag_ms]):.2f}"
    if runs[0].startup is not None:
        startup = (f"{_med([r.startup[0] for r in runs if r.startup]):.2f} CPU-s / "
                   f"{_med([r.startup[1] for r in runs if r.startup]):.2f} s")  # fmt: skip
    return (
        f"| {streams} {loop} | {name} | {_med([r.chunks / r.wall_s for r in runs]):,.0f} | "
        f"{_med([r.cpu_s / r.wall_s for r in runs]):.0%} | "
        f"{_med(per_cpu):,.0f} ({min(per_cpu):,.0f}–{max(per_cpu):,.0f}) | "
        f"{_med([r.ttft_ms[0] for r in runs]):.2f} / {_med([r.ttft_ms[1] for r in runs]):.2f} | "
        f"{_med([r.itl_ms[0] for r in runs]):.2f} / {_med([r.itl_ms[1] for r in runs]):.2f} | "
        f"{lag} | {startup} | {max(r.failed for r in runs)} |"
    )


def _ratio(streams: int, loop: str, other: str, h: list[Measured], o: list[Measured]) -> str:
    a, b = [r.per_cpu_s for r in h], [r.per_cpu_s for r in o]
    spread = paired = ""
    if len(a) > 2 and len(b) > 2:
        low, high = ratio_interval(a, b)
        mean, p_low, p_high = paired_ratio(a, b)
        spread = f" [{low:.2f}, {high:.2f}]"
        paired = f"; paired {mean:.2f}× [{p_low:.2f}, {p_high:.2f}]"
    return (f"| {streams} {loop} | **harness run / {other}** | | | **{_med(a) / _med(b):.2f}×**"
            f"{spread}{paired} | | | | | |")  # fmt: skip


def ratio_interval(
    a: Sequence[float], b: Sequence[float], draws: int = 4000
) -> tuple[float, float]:
    """A 90 % percentile-bootstrap interval for the ratio of the two medians, runs resampled
    within each client: with the ±15 % run-to-run spread of this machine, whether a ratio is
    above a goal can be told only from an interval, not from the point."""
    rng = np.random.default_rng(0)
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ratios = np.median(rng.choice(x, (draws, x.size)), axis=1) / np.median(
        rng.choice(y, (draws, y.size)), axis=1
    )
    return float(np.quantile(ratios, 0.05)), float(np.quantile(ratios, 0.95))


def paired_ratio(
    a: Sequence[float], b: Sequence[float], draws: int = 4000
) -> tuple[float, float, float]:
    """The geometric mean of the per-repetition ratios a[i] / b[i], with a 90 % bootstrap
    interval over repetitions. The two runs of a repetition are neighbours in time (the
    clients alternate A B, B A, ...), so a drift of the machine's speed, which moves both,
    cancels in their ratio; the unpaired interval above keeps it as spread."""
    logs = np.log(np.asarray(a, np.float64) / np.asarray(b, np.float64))
    rng = np.random.default_rng(0)
    means = rng.choice(logs, (draws, logs.size)).mean(axis=1)
    return (float(np.exp(logs.mean())), float(np.exp(np.quantile(means, 0.05))),
            float(np.exp(np.quantile(means, 0.95))))  # fmt: skip


def main() -> None:
    global CHUNKS, MAX_TOKENS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--loops", nargs="+", choices=["closed", "open"],
                        default=["closed", "open"])  # fmt: skip
    parser.add_argument("--clients", nargs="+", choices=["harness", *CLIENTS],
                        default=DEFAULT_CLIENTS)  # fmt: skip
    parser.add_argument("--before", type=Path, metavar="CHECKOUT",
                        help="also run `harness run` from this checkout (e.g. a git worktree "
                        "of an earlier commit), as client 'before'")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=CHUNKS,
                        help="content chunks per request (mean; ± 25 %%)")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="only: py-spy stages of `harness run` at each load")  # fmt: skip
    args = parser.parse_args()
    CHUNKS, MAX_TOKENS = args.chunks, round(args.chunks * (1 + SPREAD))
    if args.before is not None:
        args.clients = [*args.clients, "before"]
    # An installed harness has its bytecode compiled; a checkout under
    # PYTHONDONTWRITEBYTECODE (set in many CI images) would compile every module at each start.
    for checkout in (ROOT, args.before):
        if checkout is not None:
            compileall.compile_dir(checkout / "harness", quiet=1)
    client_cores, server_cores = _cores()
    print(f"whole run: TTFT {TTFT_S * 1e3:g} ms, {CHUNKS} ± {SPREAD:.0%} chunks {ITL_S * 1e3:g} "
          "ms apart; "
          f"{args.warmup:g} s warm-up + {args.duration:g} s window, {args.reps} run(s) each; "
          f"client on cores {client_cores}, server on {server_cores}", flush=True)  # fmt: skip
    if args.profile:
        for streams in args.streams:
            for loop in args.loops:
                m = run_harness(streams, loop, args.warmup, args.duration, profile=True)
                us = 1e6 * m.cpu_s / max(m.chunks / CHUNKS, 1)
                print(f"\n{streams} streams {loop} loop: {us:,.0f} µs of CPU per request "
                      f"({m.per_cpu_s:,.0f} chunks per CPU-s under the profiler)")  # fmt: skip
                print("| stage | share of samples | µs per request |\n|---|---:|---:|")
                for stage, share in m.stages.items():
                    print(f"| {stage} | {share:.1%} | {share * us:,.0f} |")
        return
    lines = [
        "| load | client | chunks/s | CPU | chunks per CPU-s (range) | TTFT error p50 / p99 ms "
        "| ITL error p50 / p99 ms | loop lag p99 ms | start-up to first request | failed |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for streams in args.streams:
        for loop in args.loops:
            runs: dict[str, list[Measured]] = {c: [] for c in args.clients}
            for rep in range(args.reps):
                for name in args.clients if rep % 2 == 0 else reversed(args.clients):
                    if name == "harness":
                        m = run_harness(streams, loop, args.warmup, args.duration)
                    elif name == "before":
                        m = run_harness(streams, loop, args.warmup, args.duration,
                                        root=args.before.resolve())  # fmt: skip
                    else:
                        m = run_client(name, streams, loop, args.warmup, args.duration)
                    runs[name].append(m)
                    extra = f" lag p99 {m.lag_ms[0]:.2f} ms" if m.lag_ms else ""
                    extra += f" start-up {m.startup[0]:.2f} CPU-s" if m.startup else ""
                    extra += f" steal {m.steal:.1%}" if m.steal is not None else ""
                    print(f"  {streams:4d} {loop:6s} {name:9s} {m.per_cpu_s:8,.0f} chunks/CPU-s "
                          f"TTFT err p50 {m.ttft_ms[0]:5.2f} p99 {m.ttft_ms[1]:6.2f} ms "
                          f"ITL err p99 {m.itl_ms[1]:6.2f} ms failed {m.failed} "
                          f"unmatched {m.unmatched}{extra}", flush=True)  # fmt: skip
            lines += [_row(streams, loop, n, runs[n]) for n in args.clients]
            if "harness" in runs:
                lines += [_ratio(streams, loop, o, runs["harness"], runs[o])
                          for o in args.clients if o != "harness"]  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
