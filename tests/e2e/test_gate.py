"""`harness gate` end to end: the real kubernetes client (in the gate's own process) against a
Kubernetes API emulator with a stand-in for KServe's controller, and two simulators as the
canary and the baseline. A healthy canary walks 10 -> 50 -> 100 and the field is removed; a
slow canary rolls back with storageUri reverted; a dry run writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import read_json, run_cli
from support.kserve_controller import NAME, NS, Controller, isvc
from support.kube_emulator import ISVC, KubeEmulator

from harness.errors import ExitCode
from harness.load.target import simulator

pytestmark = pytest.mark.e2e

BASE = "tests/data/scenarios/base.yaml"
# 4 s at 20 req/s a side: about 80 requests, above the comparison's 50-sample minimum; a
# second of warm-up while the other side's process is still starting on the same 2 cores
LOAD = ("load.warmup_s=1", "load.duration_s=4",
        "load.arrival={type: poisson, rate: 20, max_concurrency: 64}")  # fmt: skip
SLOW = {"step_base_s": 0.015}  # 1.5 times the default step: within the policy, but worse


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeEmulator, Path]]:
    with KubeEmulator() as k8s:
        k8s.seed(ISVC, NS, NAME, isvc())
        k8s.on_patch(Controller())
        yield k8s, k8s.write_kubeconfig(tmp_path / "kubeconfig")


def gate(kubeconfig: Path, out: Path, canary: str, baseline: str, *extra: str) -> Any:
    sets = [arg for s in LOAD for arg in ("--set", s)]
    return run_cli(
        "gate", BASE, "--isvc", NAME, "--namespace", NS, "--kubeconfig", str(kubeconfig),
        "--canary-url", canary, "--baseline-url", baseline, "--poll", "0.05",
        "--ready-timeout", "10", "--out", str(out), *sets, *extra, timeout=240,
    )  # fmt: skip


def gate_json(out: Path) -> dict[str, Any]:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    document: dict[str, Any] = read_json(folder / "gate.json")
    return document


def test_a_healthy_canary_is_walked_to_100_percent(
    cluster: tuple[KubeEmulator, Path], tmp_path: Path
) -> None:
    k8s, kubeconfig = cluster
    with simulator({}) as canary, simulator({}) as baseline:
        proc = gate(kubeconfig, tmp_path / "out", canary, baseline,
                    "--storage-uri", "s3://models/v2", "--apply")  # fmt: skip
    assert proc.returncode == ExitCode.PASS, proc.stdout + proc.stderr
    stored = k8s.object(ISVC, NS, NAME)
    assert "canaryTrafficPercent" not in stored["spec"]["predictor"]  # promoted
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/v2"
    document = gate_json(tmp_path / "out")
    assert document["decision"] == "PROMOTED"
    assert [s["percent"] for s in document["steps"]] == [10, 50]
    assert all(s["decision"] == "PROMOTE" for s in document["steps"])
    assert (document["storage_uri_before"], document["storage_uri_after"]) == (
        "s3://models/v1", "s3://models/v2")  # fmt: skip
    percents = [p["spec"]["predictor"].get("canaryTrafficPercent", "absent")
                for p in document["patches"]]  # fmt: skip
    assert percents == [10, 50, None]
    assert "gate: PROMOTED" in proc.stdout


def test_a_slow_canary_rolls_back_with_its_uri_reverted(
    cluster: tuple[KubeEmulator, Path], tmp_path: Path
) -> None:
    k8s, kubeconfig = cluster
    with simulator(SLOW) as canary, simulator({}) as baseline:
        proc = gate(kubeconfig, tmp_path / "out", canary, baseline,
                    "--storage-uri", "s3://models/v2", "--apply")  # fmt: skip
    assert proc.returncode == ExitCode.FAIL, proc.stdout + proc.stderr
    stored = k8s.object(ISVC, NS, NAME)
    assert stored["spec"]["predictor"]["model"]["storageUri"] == "s3://models/v1"
    assert stored["spec"]["predictor"]["canaryTrafficPercent"] == 0
    document = gate_json(tmp_path / "out")
    assert document["decision"] == "ROLLBACK"
    (step,) = document["steps"]
    assert step["percent"] == 10
    assert step["comparison"] == "ROLLBACK"
    assert step["reason"].startswith("the canary is worse than the baseline")


def test_without_apply_the_cluster_sees_no_write(
    cluster: tuple[KubeEmulator, Path], tmp_path: Path
) -> None:
    k8s, kubeconfig = cluster
    with simulator({}) as canary, simulator({}) as baseline:
        proc = gate(kubeconfig, tmp_path / "out", canary, baseline,
                    "--storage-uri", "s3://models/v2")  # fmt: skip
    assert proc.returncode == ExitCode.PASS, proc.stdout + proc.stderr
    assert k8s.writes() == []
    assert k8s.object(ISVC, NS, NAME) == isvc()
    assert "would patch InferenceService models/llm" in proc.stderr
    document = gate_json(tmp_path / "out")
    assert document["applied"] is False
    assert len(document["patches"]) == 3  # start at 10, 50, promote: printed, not sent
