"""The load engine against the simulator's faults and API variants: every request is recorded
with the right error class, through the CLI as a user runs it."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.cli import assert_exit_matches_verdict, only_run_dir, read_json, run_cli

from harness.errors import ExitCode
from harness.load.target import simulator
from harness.records.log import read_frame

pytestmark = pytest.mark.integration

SMOKE = "tests/data/scenarios/base.yaml"


def _run(tmp_path: Path, sim: dict[str, Any], *sets: str) -> tuple[int, Path]:
    args: list[str] = []
    for item in ("load.warmup_s=0", "load.duration_s=5", *sets):
        args += ["--set", item]
    with simulator(sim) as url:
        proc = run_cli("run", SMOKE, "--target", url, "--out", str(tmp_path), *args)
    run_dir = only_run_dir(tmp_path)
    assert_exit_matches_verdict(proc, run_dir)
    return proc.returncode, run_dir


def test_every_fault_lands_in_its_error_class(tmp_path: Path) -> None:
    sim = {
        "error_rate": 0.1,
        "rate_limit_rate": 0.1,
        "cut_rate": 0.1,
        "malformed_rate": 0.1,
        "stall_rate": 0.1,
        "stall_s": 3.0,
        "seed": 3,
    }
    code, run_dir = _run(
        tmp_path, sim, "load.arrival.rate=20", "target.read_timeout_s=1", "load.drain_timeout_s=5"
    )
    assert code == 1  # about half the requests fail: far beyond the 1 % alert
    df = read_frame(run_dir)
    classes = Counter(df["error"].fillna("ok"))
    assert set(classes) == {"ok", "http_status", "broken_stream", "malformed_chunk", "timeout"}
    statuses = Counter(df.loc[df["error"] == "http_status", "status"])
    assert set(statuses) == {429, 500}
    # A cut or stalled stream had already delivered content before it broke.
    broken = df[df["error"].isin(["broken_stream", "timeout"])]
    assert (broken["chunk_times"].map(len) > 0).all()
    # Failures carry a reason; successes carry server usage.
    assert (df.loc[df["error"].notna(), "error_detail"].str.len() > 0).all()
    ok = df[df["error"].isna()]
    assert (ok["output_tokens"] == 24).all()
    assert (ok["chunk_times"].map(len) == 24).all()
    verdict = read_json(run_dir / "verdict.json")
    assert verdict["summary"]["errors"] == int(
        (df["error"].notna() & (df["phase"] == "measure")).sum()
    )
    assert verdict["summary"]["error_classes"]["http_status"] == int(
        ((df["error"] == "http_status") & (df["phase"] == "measure")).sum()
    )


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_non_streaming_requests_are_timed_end_to_end(tmp_path: Path, api: str) -> None:
    code, run_dir = _run(tmp_path, {}, f"target.api={api}", "target.stream=false")
    assert code == 0
    df = read_frame(run_dir)
    assert len(df) > 10
    assert df["error"].isna().all()
    assert (df["output_tokens"] == 24).all()
    assert (df["stream"] == False).all()  # noqa: E712 (pandas element-wise)
    summary = read_json(run_dir / "verdict.json")["summary"]
    assert summary["e2el_s"]["n"] == len(df[df["phase"] == "measure"])
    assert summary["ttft_s"]["n"] == 0  # no stream, no first token to time


def test_completions_streaming_and_closed_loop(tmp_path: Path) -> None:
    code, run_dir = _run(
        tmp_path,
        {},
        "target.api=completions",
        "load.arrival={type: concurrency, users: 4}",
        "load.duration_s=3",
    )
    assert code == 0
    df = read_frame(run_dir)
    assert df["error"].isna().all()
    assert df["t_intended"].isna().all()  # closed loop has no schedule
    assert (df["chunk_times"].map(len) == 24).all()
    # Four users, each waiting for its own answer: never more than four in flight.
    assert _peak_in_flight(df) == 4


def test_concurrency_cap_holds_back_arrivals_and_records_the_lag(tmp_path: Path) -> None:
    # 40 arrivals/s of ~250 ms requests want ~10 in flight; a cap of 2 makes them queue.
    code, run_dir = _run(
        tmp_path, {}, "load.arrival={type: poisson, rate: 40, max_concurrency: 2}",
        "load.duration_s=3",
    )  # fmt: skip
    df = read_frame(run_dir)
    lag = df["t_sent"] - df["t_intended"]
    assert lag.max() > 1.0
    summary = read_json(run_dir / "verdict.json")["summary"]
    assert summary["schedule_lag_s"]["p99"] > 1.0
    # Latency from the send (about 250 ms) is not the queue's: the quick policy passes.
    assert code == ExitCode.PASS


def test_arrivals_still_queued_behind_the_cap_at_the_drain_s_end_are_counted(
    tmp_path: Path,
) -> None:
    # ~100 arrivals queue behind a cap of 2 in 3 s; a 0.5 s drain cannot send them all.
    _, run_dir = _run(
        tmp_path, {}, "load.arrival={type: poisson, rate: 40, max_concurrency: 2}",
        "load.duration_s=3", "load.drain_timeout_s=0.5",
    )  # fmt: skip
    manifest = read_json(run_dir / "manifest.json")
    recorded = len(read_frame(run_dir))  # the two cut in flight are recorded (as errors)
    cut = manifest["load"]["cut_at_drain"]
    assert cut >= 2 + 50  # the two in flight and most of the queue
    # Every arrival was recorded or counted as never sent (116 arrivals with this seed).
    assert recorded + (cut - 2) == manifest["load"]["generators"]["local"]["arrivals"]
    assert any("never sent" in note for note in manifest["notes"])


def test_max_requests_ends_the_run_and_rates_use_the_time_load_was_offered(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    code, run_dir = _run(
        tmp_path, {}, "load.arrival.rate=30", "load.max_requests=60", "load.duration_s=120"
    )
    assert time.monotonic() - started < 60  # stopped at 60 requests, not after 120 s
    assert code == 0
    assert len(read_frame(run_dir)) == 60
    rate = read_json(run_dir / "verdict.json")["summary"]["request_rate"]
    assert 30 * 0.6 < rate < 30 * 1.6  # 60 Poisson arrivals: about ±13 % by nature


def _peak_in_flight(df: Any) -> int:
    events = sorted([(t, 1) for t in df["t_sent"]] + [(t, -1) for t in df["t_done"]])
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    return peak


def test_open_loop_stages_with_warmup_and_cooldown(tmp_path: Path) -> None:
    stages = "[{duration_s: 4, rate: 5}, {duration_s: 4, rate: 25}]"
    code, run_dir = _run(
        tmp_path, {}, "load.duration_s=null", f"load.stages={stages}",
        "load.warmup_s=1", "load.cooldown_s=1",
    )  # fmt: skip
    assert code == 0
    df = read_frame(run_dir)
    start = float(read_json(run_dir / "manifest.json")["timeline"]["t_start"])
    offset = df["t_intended"] - start
    assert (df.loc[offset < 1, "phase"] == "warmup").all()
    assert (df.loc[offset >= 7, "phase"] == "cooldown").all()
    assert (df.loc[(offset >= 1) & (offset < 7), "phase"] == "measure").all()
    first, second = (offset < 4).sum(), (offset >= 4).sum()
    assert 5 <= first <= 40  # 20 expected
    assert 60 <= second <= 150  # 100 expected
    verdict = read_json(run_dir / "verdict.json")
    assert verdict["summary"]["requests"] == int((df["phase"] == "measure").sum())


def test_closed_loop_stages_change_the_number_of_users(tmp_path: Path) -> None:
    stages = "[{duration_s: 3, users: 2}, {duration_s: 3, users: 6}]"
    code, run_dir = _run(
        tmp_path, {}, "load.arrival={type: concurrency, users: 6}", "load.duration_s=null",
        f"load.stages={stages}",
    )  # fmt: skip
    assert code == 0
    df = read_frame(run_dir)
    start = float(read_json(run_dir / "manifest.json")["timeline"]["t_start"])
    early = df[(df["t_done"] - start) < 2.9]
    assert _peak_in_flight(early) <= 2
    assert _peak_in_flight(df) == 6


def test_multi_turn_resends_the_growing_history(tmp_path: Path) -> None:
    _, run_dir = _run(
        tmp_path, {}, "workload={type: multi_turn, turns: 3, prompt_tokens: 20, max_tokens: 8}",
        "load.arrival={type: concurrency, users: 2}", "load.duration_s=4",
    )  # fmt: skip
    df = read_frame(run_dir)
    done = df[df["error"].isna()].sort_values(["session", "turn"])
    complete = done.groupby("session").filter(lambda g: list(g["turn"]) == [0, 1, 2])
    assert complete["session"].nunique() >= 2
    for _, conv in complete.groupby("session"):
        tokens = conv["prompt_tokens"].tolist()
        # Each turn adds the last answer (8 tokens) and a new 20-word question to the prompt.
        assert tokens[0] < tokens[1] < tokens[2]
        assert tokens[1] - tokens[0] >= 28
        assert (conv["planned_prompt_tokens"].diff().dropna() >= 20).all()


def test_lognormal_lengths_reach_the_server_and_are_calibrated(tmp_path: Path) -> None:
    _, run_dir = _run(
        tmp_path, {},
        "workload.prompt_tokens={type: lognormal, mean: 200, std: 80}",
        "workload.max_tokens={type: uniform, min: 4, max: 12}",
        "load.arrival.rate=30",
    )  # fmt: skip
    df = read_frame(run_dir)
    ok = df[df["error"].isna()]
    assert ok["planned_prompt_tokens"].std() > 30  # lengths really vary
    assert (ok["output_tokens"] == ok["max_tokens"]).all()  # ignore_eos honoured
    assert set(ok["max_tokens"]) <= set(range(4, 13))
    ratio = read_json(run_dir / "verdict.json")["summary"]["prompt_tokens_vs_planned"]
    assert ratio["n"] == int((ok["phase"] == "measure").sum())
    assert 1.0 <= ratio["mean_ratio"] < 1.3  # the simulator counts words plus a chat template
