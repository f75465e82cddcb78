"""`harness gate` when the cluster refuses, stalls or is interrupted: one clear line, the exact
exit code, and the service left at its last verified state or rolled back; a step with too
little data holds (exit 3) and says how long a step would decide.

The real kubernetes client in the gate's process, against the Kubernetes API emulator with a
stand-in for KServe's controller (tests/support)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import HARNESS, ROOT, read_json, run_cli
from support.kserve_controller import NAME, NS, Controller, isvc
from support.kube_emulator import ISVC, KubeEmulator

from harness.errors import ExitCode
from harness.load.target import simulator

pytestmark = pytest.mark.e2e

BASE = "tests/data/scenarios/base.yaml"
NOWHERE = "http://127.0.0.1:9/v1"  # never reached: these gates stop before any load
LOAD = ("load.warmup_s=0.5", "load.arrival={type: poisson, rate: 20, max_concurrency: 64}")
V1, V2 = "s3://models/v1", "s3://models/v2"


@pytest.fixture
def k8s() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        emulator.seed(ISVC, NS, NAME, isvc())
        yield emulator


def args(kubeconfig: Path, out: Path, *extra: str, canary: str = NOWHERE,
         baseline: str = NOWHERE, duration: float = 4) -> list[str]:  # fmt: skip
    sets = [a for s in (*LOAD, f"load.duration_s={duration}") for a in ("--set", s)]
    return ["gate", BASE, "--isvc", NAME, "--namespace", NS, "--kubeconfig", str(kubeconfig),
            "--canary-url", canary, "--baseline-url", baseline, "--poll", "0.05",
            "--ready-timeout", "10", "--out", str(out), *sets, *extra]  # fmt: skip


def gate_json(out: Path) -> dict[str, Any]:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    document: dict[str, Any] = read_json(folder / "gate.json")
    return document


def predictor(k8s: KubeEmulator) -> dict[str, Any]:
    spec: dict[str, Any] = k8s.object(ISVC, NS, NAME)["spec"]["predictor"]
    return spec


@pytest.mark.parametrize(
    ("method", "status", "reason", "said"),
    [
        ("get", 401, "Unauthorized", "read InferenceService models/llm: the cluster did not "
         "accept the credentials (401): check the kubeconfig"),
        ("get", 404, "NotFound", "read InferenceService models/llm: not found (404): check the "
         "name and the namespace"),
        ("patch", 403, "Forbidden", "patch InferenceService models/llm: forbidden (403): the "
         "gate's account may not patch inferenceservices in models (deploy/gate/ has the Role "
         "it needs)"),
        ("patch", 409, "Conflict", "patch InferenceService models/llm: conflict (409) 4 times: "
         "another writer keeps changing it"),
    ],
)  # fmt: skip
def test_a_refusal_is_one_line_exit_4_and_nothing_half_applied(
    k8s: KubeEmulator, tmp_path: Path, method: str, status: int, reason: str, said: str
) -> None:
    k8s.fail_next(method, status, reason, count=4)
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    proc = run_cli(*args(kubeconfig, tmp_path / "out", "--storage-uri", V2, "--apply"))
    assert proc.returncode == ExitCode.INVALID, proc.stdout + proc.stderr
    assert proc.stderr.strip().endswith(said), proc.stderr
    assert "Traceback" not in proc.stderr
    assert k8s.object(ISVC, NS, NAME) == isvc()  # the start patch never took
    assert gate_json(tmp_path / "out")["decision"] == "ERROR"


def test_a_conflict_once_is_retried_and_the_walk_goes_on(k8s: KubeEmulator, tmp_path: Path) -> None:
    """A 409 on the start patch is retried after a fresh read; a step then never takes
    effect, so the gate stops at its timeout (exit 4) and rolls the moved traffic back."""
    k8s.fail_next("patch", 409, "Conflict")
    k8s.on_patch(Controller(ready=False))
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    cmd = args(kubeconfig, tmp_path / "out", "--storage-uri", V2, "--apply")
    cmd[cmd.index("--ready-timeout") + 1] = "1"
    proc = run_cli(*cmd)
    assert proc.returncode == ExitCode.INVALID, proc.stdout + proc.stderr
    assert proc.stderr.endswith("error: InferenceService models/llm: 10 % not in effect after "
                                "1 s (LatestDeploymentReady is Unknown)\n")  # fmt: skip
    assert (predictor(k8s)["model"]["storageUri"], predictor(k8s)["canaryTrafficPercent"]) == (
        V1, 0)  # fmt: skip
    journal = next((tmp_path / "out").iterdir()) / "gate.jsonl"
    events = [json.loads(line)["event"] for line in journal.read_text().splitlines()]
    assert events[:3] == ["read", "patch", "wait"]
    assert events[-3:] == ["rolled_back", "error", "decision"]


def test_a_failed_revision_rolls_back_at_once(k8s: KubeEmulator, tmp_path: Path) -> None:
    k8s.on_patch(Controller(fail="RevisionFailed: container vllm OOMKilled"))
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    proc = run_cli(*args(kubeconfig, tmp_path / "out", "--storage-uri", V2, "--apply"))
    assert proc.returncode == ExitCode.INVALID, proc.stdout + proc.stderr
    assert "the new revision failed: LatestDeploymentReady is False: RevisionFailed" in proc.stderr
    assert (predictor(k8s)["model"]["storageUri"], predictor(k8s)["canaryTrafficPercent"]) == (
        V1, 0)  # fmt: skip


def test_raw_deployment_has_no_split_and_stops_with_exit_2(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    raw = isvc()
    raw["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    k8s.seed(ISVC, NS, NAME, raw)
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    proc = run_cli(*args(kubeconfig, tmp_path / "out", "--storage-uri", V2, "--apply"))
    assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
    assert "runs in RawDeployment mode, which has no canary traffic split" in proc.stderr
    assert k8s.writes() == []


def test_too_little_data_holds_the_weight_and_says_how_long(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    k8s.on_patch(Controller())
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    with simulator({}) as canary, simulator({}) as baseline:
        cmd = args(kubeconfig, tmp_path / "out", "--storage-uri", V2, "--apply",
                   canary=canary, baseline=baseline, duration=1)  # fmt: skip
        proc = run_cli(*cmd, timeout=120)
    assert proc.returncode == ExitCode.INCONCLUSIVE, proc.stdout + proc.stderr
    assert predictor(k8s)["canaryTrafficPercent"] == 10  # the weight is kept
    assert predictor(k8s)["model"]["storageUri"] == V2
    document = gate_json(tmp_path / "out")
    assert document["decision"] == "HOLD"
    assert document["hint"].startswith("a step measured for about ")
    seconds = int(document["hint"].split("--set load.duration_s=")[1])
    assert seconds > 1
    assert "gate: HOLD: 10 % kept" in proc.stdout


@pytest.mark.parametrize("rollback", [True, False])
def test_an_interrupt_mid_step_rolls_back_unless_told_not_to(
    k8s: KubeEmulator, tmp_path: Path, rollback: bool
) -> None:
    k8s.on_patch(Controller())
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    out = tmp_path / "out"
    extra = () if rollback else ("--no-rollback-on-interrupt",)
    with simulator({}) as canary, simulator({}) as baseline:
        cmd = args(kubeconfig, out, "--storage-uri", V2, "--apply", *extra, canary=canary,
                   baseline=baseline, duration=60)  # fmt: skip
        proc = subprocess.Popen([str(HARNESS), *cmd], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            _wait_for_event(out, "runs", proc, timeout_s=60)
            _wait_for_records(out, proc, timeout_s=60)  # both runs are sending
            proc.send_signal(signal.SIGTERM)  # as a cancelled CI job would
            stdout, stderr = proc.communicate(timeout=90)
        finally:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, stdout + stderr
    document = gate_json(out)
    assert document["decision"] == "INTERRUPTED"
    if rollback:
        assert "interrupted: the canary was rolled back" in stderr
        assert (predictor(k8s)["model"]["storageUri"], predictor(k8s)["canaryTrafficPercent"]) \
            == (V1, 0)  # fmt: skip
    else:
        assert "left as it was (--no-rollback-on-interrupt)" in stderr
        assert (predictor(k8s)["model"]["storageUri"], predictor(k8s)["canaryTrafficPercent"]) \
            == (V2, 10)  # fmt: skip
    step = next(out.iterdir()) / "step-10"
    for role in ("canary", "baseline"):  # the runs stopped in order and kept their records
        (run_dir,) = [p for p in (step / role).iterdir() if p.is_dir()]
        assert (run_dir / "manifest.json").is_file()


def _wait_for_records(out: Path, proc: subprocess.Popen[str], timeout_s: float) -> None:
    """Until the canary's and the baseline's runs have each written a record."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gate ended before its runs sent anything"
        logs = [p for p in out.glob("*/step-10/*/*/records.jsonl") if p.stat().st_size > 0]
        if len(logs) == 2:
            return
        time.sleep(0.1)
    raise AssertionError(f"the runs wrote no records within {timeout_s} s")


def _wait_for_event(out: Path, event: str, proc: subprocess.Popen[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the gate ended before the event"
        for journal in out.glob("*/gate.jsonl"):
            if any(json.loads(line)["event"] == event for line in journal.read_text().splitlines()):
                return
        time.sleep(0.1)
    raise AssertionError(f"no {event} event within {timeout_s} s")


def test_a_clearly_bad_step_ends_early_and_stops_the_baseline_with_it(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    """With load.early_stop, a canary that FAILs at the first look ends its run; the gate
    stops the baseline then (it is judged on what it measured) and rolls back."""
    k8s.on_patch(Controller())
    kubeconfig = k8s.write_kubeconfig(tmp_path / "kubeconfig")
    out = tmp_path / "out"
    # the baseline's 15 % errors sit between the policy's 10 % target and 20 % alert: a few
    # hundred requests are needed to decide it, so it is undecided when the canary stops
    with simulator({"extra_ttft_s": 1.5}) as canary, simulator({"error_rate": 0.15}) as baseline:
        cmd = args(kubeconfig, out, "--storage-uri", V2, "--apply", "--set",
                   "load.early_stop={every_s: 1, min_s: 3}", canary=canary, baseline=baseline,
                   duration=60)  # fmt: skip
        proc = run_cli(*cmd, timeout=120)
    assert proc.returncode == ExitCode.FAIL, proc.stdout + proc.stderr
    assert (predictor(k8s)["model"]["storageUri"], predictor(k8s)["canaryTrafficPercent"]) == (
        V1, 0)  # fmt: skip
    step = next(out.iterdir()) / "step-10"
    manifests = {}
    for role in ("canary", "baseline"):
        (run_dir,) = [p for p in (step / role).iterdir() if p.is_dir()]
        manifests[role] = read_json(run_dir / "manifest.json")
    assert manifests["canary"]["load"]["early_stop"]["stopped"]
    stopped = manifests["baseline"]["load"]["interrupted"]
    assert stopped["signal"] == "SIGINT"
    assert stopped["measured_s"] < 30 < stopped["planned_measured_s"]
