"""The Kubernetes manifests under deploy/ call the CLI with arguments it accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from support.cli import parse_args

from harness.spec.config import validate
from harness.spec.scenario import Scenario

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "distributed-load.yaml"


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(DEPLOY.read_text()) if d]


def _args(kind: str, name: str) -> list[str]:
    doc = next(d for d in _docs() if d["kind"] == kind and d["metadata"]["name"] == name)
    args: list[str] = doc["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_master_and_workers_agree_and_parse() -> None:
    master = parse_args(_args("Job", "harness-master"))
    worker = parse_args(_args("Job", "harness-worker"))
    assert master.params["master_bind"] == "0.0.0.0:5557"
    assert worker.params["master"] == "harness-master:5557"
    worker_job = next(d for d in _docs() if d["metadata"]["name"] == "harness-worker")
    assert worker_job["spec"]["parallelism"] == master.params["workers"]
    service = next(d for d in _docs() if d["kind"] == "Service")
    assert service["spec"]["ports"][0]["port"] == 5557


def test_the_configmap_scenario_is_valid() -> None:
    cm = next(d for d in _docs() if d["kind"] == "ConfigMap")
    scenario = validate(Scenario, yaml.safe_load(cm["data"]["scenario.yaml"]), "configmap")
    assert scenario.target.url is not None
