"""Bad input, as a new user's CI meets it: every case exits 2 with one line that names the file,
key or flag, and never a traceback. Scenario keys and flags, policies, run folders given to
`evaluate`, and the other commands' arguments."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.cli import ROOT, run_cli

from harness.errors import ExitCode

pytestmark = pytest.mark.e2e

BASE = "tests/data/scenarios/base.yaml"
STORED = ROOT / "tests/data/runs/stored-run"
BOMB = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)
)


def assert_refused(args: list[str], *named: str, timeout: float = 60.0) -> str:
    proc = run_cli(*args, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == ExitCode.USAGE, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    for text in named:
        assert text in out, (text, out[-2000:])
    return out


# --- scenario keys (--set) and flags of `harness run` ------------------------------------
SET_CASES = {
    "rate-bool": ("load.arrival.rate=true", "load.arrival.rate"),
    "rate-inf": ("load.arrival.rate=.inf", "load.arrival.rate"),
    "rate-nan": ("load.arrival.rate=.nan", "load.arrival.rate"),
    "rate-zero": ("load.arrival.rate=0", "load.arrival.rate"),
    "connect-timeout-huge": ("target.connect_timeout_s=1e300", "target.connect_timeout_s"),
    "warmup-huge": ("load.warmup_s=1e300", "load.warmup_s"),
    "duration-negative": ("load.duration_s=-1", "load.duration_s"),
    "name-long": ("name=" + "n" * 300, "name"),
    "name-path": ("name=../escape", "name"),
    "stream-string": ("target.stream='yes'", "target.stream"),
    "arrival-kind": ("load.arrival.type=weird", "load.arrival"),
    "workload-kind": ("workload.type=unknown", "workload"),
    "unknown-key": ("unknown_key=1", "unknown_key"),
    "load-scalar": ("load=5", "load"),
    "no-equals": ("noequals", "--set noequals"),
    "api-kind": ("target.api=grpc", "target.api"),
    "key-env-name": ("target.api_key_env=1bad", "target.api_key_env"),
    "prompt-negative": ("workload.prompt_tokens=-5", "workload.prompt_tokens"),
    "concurrency-zero": ("load.arrival.max_concurrency=0", "load.arrival.max_concurrency"),
    "policy-missing": ("policy=missing.yaml", "missing.yaml"),
    "url-ftp": ("target.url=ftp://127.0.0.1/v1", "target.url"),
    "url-port": ("target.url=http://127.0.0.1:99999/v1", "target.url"),
    "sim-setting": ("target.sim.max_num_seqs=-3", "target.sim"),
}


@pytest.mark.parametrize(("override", "named"), SET_CASES.values(), ids=SET_CASES.keys())
def test_a_bad_scenario_key_exits_2(override: str, named: str) -> None:
    # A missing policy is named by its own path; every other problem by the scenario's.
    scenario = () if override.startswith("policy=") else (BASE,)
    assert_refused(["run", BASE, "--set", override], *scenario, named)


FLAG_CASES = {
    "target-ftp": (["--target", "ftp://127.0.0.1:1/v1"], "--target"),
    "target-bracket": (["--target", "http://[::1/v1"], "--target"),
    "target-no-scheme": (["--target", "127.0.0.1:8000/v1"], "--target"),
    "target-port-range": (["--target", "http://127.0.0.1:99999/v1"], "--target"),
    "target-port-zero": (["--target", "http://127.0.0.1:0/v1"], "--target"),
    "target-no-host": (["--target", "http:///v1"], "--target"),
    "target-query": (["--target", "http://127.0.0.1:8000/v1?x=1"], "--target"),
    "workers-negative": (["--workers", "-1"], "--workers"),
    "master-bind": (["--master-bind", "nohost"], "HOST:PORT"),
    "unknown-option": (["--frobnicate"], "--frobnicate"),
}


@pytest.mark.parametrize(("flags", "named"), FLAG_CASES.values(), ids=FLAG_CASES.keys())
def test_a_bad_flag_exits_2(flags: list[str], named: str) -> None:
    assert_refused(["run", BASE, *flags], named)


def test_an_out_folder_that_cannot_be_made_exits_2() -> None:
    assert_refused(["run", BASE, "--out", "/proc/harness-results"], "/proc/harness-results")


# --- scenario and policy files ------------------------------------------------------------
def _policy_with(objective: str) -> str:
    return f"schema: 1\nname: p\nobjectives:\n  - {objective}\n"


FILE_CASES: dict[str, tuple[str, str, str]] = {
    # name: (which file, its text, a word the message must have)
    "scenario-list": ("scenario", "- a\n- b\n", "mapping"),
    "scenario-empty": ("scenario", "", "required"),
    "scenario-yaml": ("scenario", "schema: 1\nname: [unclosed\n", "invalid YAML"),
    "scenario-duplicate": ("scenario", "schema: 1\nname: a\nname: b\n", "duplicate key"),
    "scenario-bomb": ("scenario", "schema: 1\n" + BOMB, "expands"),
    "scenario-schema": (
        "scenario",
        "schema: 9\nname: a\nload: {arrival: {type: poisson, rate: 1}}\n",
        "schema",
    ),
    "policy-yaml": ("policy", "objectives: [\n", "invalid YAML"),
    "policy-duplicate": ("policy", "schema: 1\nname: a\nname: b\nobjectives: []\n", "duplicate"),
    "policy-bomb": ("policy", "schema: 1\n" + BOMB, "expands"),
    "policy-metric": (
        "policy",
        _policy_with("{name: a, metric: nope, stat: p50, target: 1s}"),
        "metric",
    ),
    "policy-stat": (
        "policy",
        _policy_with("{name: a, metric: e2el, stat: p101, target: 1s}"),
        "stat",
    ),
    "policy-target": (
        "policy",
        _policy_with("{name: a, metric: e2el, stat: p50, target: fast}"),
        "target",
    ),
    "policy-alert-side": (
        "policy",
        _policy_with("{name: a, metric: e2el, stat: p50, target: 2s, alert: 1s}"),
        "alert",
    ),
    "policy-no-objectives": ("policy", "schema: 1\nname: p\nobjectives: []\n", "objectives"),
    "policy-binary": ("policy", "\udcff\udcfe", "cannot read"),
}


@pytest.mark.parametrize(("which", "text", "word"), FILE_CASES.values(), ids=FILE_CASES.keys())
def test_a_bad_file_exits_2_naming_it(tmp_path: Path, which: str, text: str, word: str) -> None:
    path = tmp_path / f"{which}.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    args = ["run", str(path)] if which == "scenario" else ["run", BASE, "--policy", str(path)]
    assert_refused(args, str(path), word)


def test_a_missing_scenario_exits_2(tmp_path: Path) -> None:
    assert_refused(["run", str(tmp_path / "nope.yaml")], "nope.yaml")


def test_a_folder_given_as_scenario_exits_2(tmp_path: Path) -> None:
    assert_refused(["run", str(tmp_path)], str(tmp_path))


# --- run folders given to evaluate --------------------------------------------------------
def _garbage(path: Path) -> None:
    path.write_bytes(b"PAR1 this is not parquet at all PAR1")


def _foreign_parquet(path: Path) -> None:
    pq.write_table(pa.table({"city": ["Oslo", "Lima"], "population": [709_000, 10_000_000]}), path)


def _manifest(edit: Callable[[dict[str, object]], object]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        data = json.loads(path.read_text(encoding="utf-8"))
        edit(data)
        path.write_text(json.dumps(data), encoding="utf-8")

    return apply


FOLDER_CASES: dict[str, tuple[str, Callable[[Path], object]]] = {
    "records-garbage": ("records.parquet", _garbage),
    "records-foreign": ("records.parquet", _foreign_parquet),
    "records-empty-file": ("records.parquet", lambda p: p.write_bytes(b"")),
    "samples-garbage": ("samples.parquet", _garbage),
    "server-garbage": ("server.json", lambda p: p.write_text("{not json", encoding="utf-8")),
    "server-shape": ("server.json", lambda p: p.write_text('{"sources": 5}', encoding="utf-8")),
    "server-sources": (
        "server.json",
        lambda p: p.write_text('{"sources": [{"windows": 7}]}', encoding="utf-8"),
    ),
    "manifest-garbage": ("manifest.json", lambda p: p.write_text("{", encoding="utf-8")),
    "manifest-schema": ("manifest.json", _manifest(lambda d: d.update(schema=99))),
    "manifest-missing-key": ("manifest.json", _manifest(lambda d: d.pop("run_id"))),
    "manifest-timeline": (
        "manifest.json",
        _manifest(lambda d: d.update(timeline={"wall_start": "soon"})),
    ),
    "manifest-policy": ("manifest.json", _manifest(lambda d: d.update(policy={"schema": 1}))),
    "manifest-notes": ("manifest.json", _manifest(lambda d: d.update(notes=5))),
}


@pytest.mark.parametrize(("name", "damage"), FOLDER_CASES.values(), ids=FOLDER_CASES.keys())
def test_a_damaged_run_folder_exits_2_naming_the_file(
    tmp_path: Path, name: str, damage: Callable[[Path], object]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(STORED, run_dir)
    damage(run_dir / name)
    assert_refused(["evaluate", str(run_dir)], name)


def test_evaluate_of_a_folder_that_is_no_run_exits_2(tmp_path: Path) -> None:
    assert_refused(["evaluate", str(tmp_path)], "manifest.json")
    assert_refused(["evaluate", str(tmp_path / "nope")], "nope")


def test_evaluate_against_a_missing_baseline_exits_2(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(STORED, run_dir)
    assert_refused(["evaluate", str(run_dir), "--baseline", str(tmp_path / "gone")], "gone")


def test_evaluate_with_a_bad_policy_exits_2(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(STORED, run_dir)
    policy = tmp_path / "p.yaml"
    policy.write_text("schema: 1\nname: p\nobjectives: 5\n", encoding="utf-8")
    assert_refused(["evaluate", str(run_dir), "--policy", str(policy)], str(policy))


# --- the other commands ---------------------------------------------------------------------
def test_slo_rules_refuses_bad_arguments(tmp_path: Path) -> None:
    assert_refused(["slo", "rules", str(tmp_path / "none.yaml")], "none.yaml")
    assert_refused(["slo", "rules", "slo/runbook.yaml", "--selector", "novalue"], "novalue")
    assert_refused(["slo", "rules", "slo/runbook.yaml", "--out", "/proc/rules.yaml"], "--out")


def test_worker_and_unknown_commands_exit_2() -> None:
    assert_refused(["worker", "--master", "nohost"], "HOST:PORT")
    assert_refused(["frobnicate"], "frobnicate")
