"""`harness tune` with the kserve launcher, on the Kubernetes API emulator with a test-side
KServe controller (every change of the predictor is a new revision, Ready at once). The
load goes to a simulator standing in for the InferenceService's URL.

A dry run prints each setting's patch and writes nothing; with --apply every setting is
patched into the predictor's args, waited for, measured, and the InferenceService gets its
own args back when the study ends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import read_json, run_cli
from support.kserve_controller import ARGS, ENV, NAME, NS, RevisingController, engine_isvc
from support.kube_emulator import ISVC, KubeEmulator

from harness.errors import ExitCode
from harness.load.target import simulator

pytestmark = pytest.mark.e2e


@pytest.fixture
def k8s() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        emulator.seed(ISVC, NS, NAME, engine_isvc())
        yield emulator


def study_file(tmp_path: Path, url: str, kubeconfig: Path) -> Path:
    root = Path(__file__).resolve().parents[1] / "data"
    doc: dict[str, Any] = {
        "schema": 1,
        "name": "kserve-batch",
        "scenario": str(root / "scenarios" / "tune.yaml"),
        "launcher": {"type": "kserve", "name": NAME, "namespace": NS, "url": url,
                     "kubeconfig": str(kubeconfig), "ready_timeout_s": 20},
        "grid": {"max_num_seqs": [8, 16]},
    }  # fmt: skip
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_dry_run_prints_the_patches_and_writes_nothing(k8s: KubeEmulator, tmp_path: Path) -> None:
    study = study_file(tmp_path, "http://127.0.0.1:9/v1", k8s.write_kubeconfig(tmp_path / "kc"))
    proc = run_cli("tune", str(study), "--out", str(tmp_path / "out"))
    assert proc.returncode == ExitCode.PASS, proc.stdout + proc.stderr
    assert "max_num_seqs=8: " in proc.stdout
    assert "--max-num-seqs=16" in proc.stdout
    assert "dry run: nothing was patched or measured" in proc.stdout
    assert k8s.writes() == []
    assert not (tmp_path / "out").exists()


def test_each_setting_is_patched_measured_and_the_service_restored(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    k8s.on_patch(RevisingController())
    sim = {"step_base_s": 0.005, "per_seq_s": 0.0002, "prefill_per_token_s": 0,
           "max_num_seqs": 16}  # fmt: skip
    with simulator(sim) as url:
        study = study_file(tmp_path, url, k8s.write_kubeconfig(tmp_path / "kc"))
        proc = run_cli("tune", str(study), "--out", str(tmp_path), "--apply", timeout=180)
    assert proc.returncode == ExitCode.PASS, proc.stdout + proc.stderr
    doc = read_json(tmp_path / "tune-kserve-batch" / "study.json")
    assert [t["status"] for t in doc["trials"]] == ["measured", "measured"]
    patches = [w for w in k8s.writes() if w[0] == "PATCH"]
    assert len(patches) == 3  # one per setting, then the original args back
    model = k8s.object(ISVC, NS, NAME)["spec"]["predictor"]["model"]
    assert (model["args"], model["env"]) == (ARGS, ENV)
    best = doc["best"]
    seqs = best["params"]["max_num_seqs"]
    assert best["isvc_patch"]["spec"]["predictor"]["model"]["args"] == [
        "--model_name=llm", "--max-model-len=4096", f"--max-num-seqs={seqs}"]  # fmt: skip
    assert "restored the args and env" in proc.stderr
