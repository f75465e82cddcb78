"""`harness gate --litellm-configmap`: the blue-green switch through the REAL LiteLLM proxy,
its config in a ConfigMap and its Deployment restarted on the Kubernetes API emulator (a
test-side controller restarts the proxy, tests/support/litellm_gateway.py).

A healthy new backend is switched to, verified (the gateway routes to it and a probe is
answered by it) and kept. A new backend that fails behind a configured fallback answers 200
to every request, served by the fallback: the plain status codes would pass it, the gate
sees who served each request, fails it and switches back to the original config."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from support.cli import ROOT, read_json, run_cli
from support.kube_emulator import CONFIGMAPS, DEPLOYMENTS, KubeEmulator
from support.litellm_gateway import CONFIGMAP, KEY, NS, Gateway, gateway_config, seed
from support.litellm_proxy import DEFAULT_MASTER_KEY, litellm_available

from harness.errors import ExitCode
from harness.load.target import simulator

pytestmark = pytest.mark.e2e
needs_litellm = pytest.mark.skipif(
    not litellm_available(), reason="needs .venv-litellm (scripts/test-env)"
)


@pytest.fixture
def k8s() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        yield emulator


def scenario(tmp_path: Path, gateway_url: str, policy: str) -> Path:
    doc = {
        "schema": 1, "name": "gateway-switch",
        "target": {"url": gateway_url, "model": "llm", "api_key_env": "GATEWAY_KEY"},
        "workload": {"type": "synthetic", "prompt_tokens": 32, "max_tokens": 8, "seed": 1},
        # 12 req/s for 6 s: above the comparison's 50 samples a side, and light enough that
        # the proxy (a busy Python process on these 2 cores) leaves the load generator room
        "load": {"arrival": {"type": "poisson", "rate": 12, "max_concurrency": 32},
                 "warmup_s": 2, "duration_s": 6, "drain_timeout_s": 20},
        "policy": str(ROOT / policy),
    }  # fmt: skip
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def gate(kubeconfig: Path, scenario_file: Path, out: Path, new_base: str,
         apply: bool = True) -> Any:  # fmt: skip
    return run_cli(
        "gate", str(scenario_file), "--namespace", NS, "--litellm-configmap", CONFIGMAP,
        "--litellm-model", "llm", "--new-api-base", new_base, "--kubeconfig", str(kubeconfig),
        "--poll", "0.2", "--ready-timeout", "60", "--out", str(out),
        *(["--apply"] if apply else []), timeout=300, env={"GATEWAY_KEY": DEFAULT_MASTER_KEY},
    )  # fmt: skip


def gate_json(out: Path) -> dict[str, Any]:
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    document: dict[str, Any] = read_json(folder / "gate.json")
    return document


@needs_litellm
def test_a_healthy_new_backend_is_switched_to_verified_and_kept(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    with simulator({}) as blue, simulator({}) as green:
        original = gateway_config({"llm": blue})
        gw = Gateway(k8s, original)
        try:
            proc = gate(k8s.write_kubeconfig(tmp_path / "kubeconfig"),
                        scenario(tmp_path, gw.url, "tests/data/policies/quick.yaml"),
                        tmp_path / "out", green)  # fmt: skip
        finally:
            gw.close()
    assert proc.returncode == ExitCode.PASS, proc.stdout + proc.stderr
    assert yaml.safe_load(gw.config())["model_list"][0]["litellm_params"]["api_base"] == green
    assert len(gw.restarts) == 2  # started, then restarted once by the switch
    document = gate_json(tmp_path / "out")
    assert document["decision"] == "PROMOTED"
    assert document["probe"] == {"api_base": green, "fallbacks": 0, "status": 200}
    assert (document["api_base_before"], document["api_base_after"]) == (blue, green)
    assert "sk-backend-secret" not in proc.stderr + json.dumps(document)  # masked when printed
    assert "DEFAULT_MASTER_KEY" not in proc.stderr
    assert DEFAULT_MASTER_KEY not in proc.stderr
    assert "restartedAt" in json.dumps(k8s.object(DEPLOYMENTS, NS, "litellm")["spec"])


@needs_litellm
def test_a_canary_served_by_its_fallback_fails_and_is_switched_back(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    with simulator({}) as blue, simulator({"error_rate": 1.0}) as broken:
        original = gateway_config({"llm": blue, "llm-fallback": blue}, {"llm": "llm-fallback"})
        gw = Gateway(k8s, original)
        try:
            proc = gate(k8s.write_kubeconfig(tmp_path / "kubeconfig"),
                        scenario(tmp_path, gw.url, "slo/runbook.yaml"), tmp_path / "out",
                        broken)  # fmt: skip
        finally:
            gw.close()
    assert proc.returncode == ExitCode.FAIL, proc.stdout + proc.stderr
    assert k8s.object(CONFIGMAPS, NS, CONFIGMAP)["data"][KEY] == original  # byte for byte
    assert gw.restarts[-1] == original
    assert len(gw.restarts) == 3
    document = gate_json(tmp_path / "out")
    assert document["decision"] == "ROLLBACK"
    assert document["probe"]["api_base"] == blue
    assert document["probe"]["fallbacks"] >= 1
    assert document["probe"]["status"] == 200
    assert "the new backend is not serving" in proc.stderr
    (canary,) = [p for p in (next((tmp_path / "out").iterdir()) / "after" / "canary").iterdir()
                 if p.is_dir()]  # fmt: skip
    table = pq.read_table(canary / "records.parquet").to_pylist()
    measured = [r for r in table if r["phase"] == "measure"]
    assert measured
    assert all(r["status"] == 200 for r in measured)
    verdict = read_json(canary / "verdict.json")
    assert verdict["decision"] == "FAIL"
    error_rate = next(o for o in verdict["objectives"] if o["metric"] == "error_rate")
    assert error_rate["verdict"] == "FAIL", error_rate


def test_a_dry_run_writes_nothing_prints_masked_patches_and_judges_the_new_backend(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    """Without --apply: the new backend is measured directly beside the gateway (here a
    simulator stands for the gateway: nothing restarts it), every patch is printed with the
    config's keys masked, and the emulator sees no write."""
    with simulator({}) as gateway, simulator({}) as green:
        original = gateway_config({"llm": gateway})
        seed(k8s, original)
        scenario_file = scenario(tmp_path, gateway, "tests/data/policies/quick.yaml")
        text = scenario_file.read_text().replace("model: llm", "model: sim-llama-3-8b")
        scenario_file.write_text(text)
        proc = gate(k8s.write_kubeconfig(tmp_path / "kubeconfig"), scenario_file,
                    tmp_path / "out", green, apply=False)  # fmt: skip
    assert proc.returncode == ExitCode.PASS, proc.stdout + proc.stderr
    assert k8s.writes() == []
    assert k8s.object(CONFIGMAPS, NS, CONFIGMAP)["data"][KEY] == original
    assert "would patch ConfigMap models/litellm-config" in proc.stderr
    assert "would patch Deployment models/litellm" in proc.stderr
    assert "sk-backend-secret" not in proc.stderr
    assert DEFAULT_MASTER_KEY not in proc.stderr
    document = gate_json(tmp_path / "out")
    assert document["applied"] is False
    assert document["decision"] == "PROMOTED"
    assert [p["object"] for p in document["patches"]] == [
        "ConfigMap models/litellm-config", "Deployment models/litellm"]  # fmt: skip
