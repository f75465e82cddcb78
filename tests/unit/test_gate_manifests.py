"""Everything under deploy/ is what it claims: each Kubernetes manifest validates against
Kubernetes' own schemas (kubernetes-validate), the gate's Job parses with the real CLI and runs
as a ServiceAccount whose Roles allow every call harness/gate makes and no more, and the GitHub
workflow validates against SchemaStore's schema and publishes from the gate's real layout."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import parse_args

from harness.gate import kserve
from harness.report.adapters import argo_documents
from harness.spec.config import validate
from harness.spec.policy import load_policy
from harness.spec.scenario import Scenario

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
GATE = DEPLOY / "gate"
WORKFLOW = DEPLOY / "ci" / "github-actions-gate.yml"
K8S_VERSION = "1.30"  # the oldest Kubernetes still supported upstream when this was written
IMAGE_ROOT = Path("/opt/harness")  # deploy/Dockerfile's WORKDIR, where it copies slo/

# kubernetes-validate ships no type information.
kubernetes_validate: Any = importlib.import_module("kubernetes_validate")

#: What each kubernetes-client method does, as an RBAC verb.
_VERBS = {"read": "get", "get": "get", "patch": "patch", "list": "list", "create": "create",
          "replace": "update", "delete": "delete"}  # fmt: skip
#: The kubernetes-client name of a resource, as RBAC's (API group, resource).
_RESOURCES = {
    "custom_object": (kserve.GROUP, kserve.PLURAL),  # the only custom resource the gate reads
    "config_map": ("", "configmaps"),
    "deployment": ("apps", "deployments"),
}
_CALL = re.compile(r"^(read|get|patch|list|create|replace|delete)_namespaced_(\w+)$")


def manifests() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                out.append(
                    (f"{path.relative_to(ROOT)} {doc['kind']}/{doc['metadata']['name']}", doc)
                )
    return out


def gate_docs() -> list[dict[str, Any]]:
    return [doc for name, doc in manifests() if name.startswith("deploy/gate/")]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in gate_docs() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=[n for n, _ in manifests()])
def test_every_deploy_manifest_validates_against_kubernetes(name: str, doc: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == K8S_VERSION, name


def test_strict_validation_refuses_an_unknown_field() -> None:
    job = json.loads(json.dumps(one("Job")))
    job["spec"]["template"]["spec"]["containers"][0]["argz"] = ["gate"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_the_generated_argo_job_and_configmap_are_valid_kubernetes() -> None:
    policy = ROOT / "slo" / "runbook.yaml"
    docs, _ = argo_documents(load_policy(policy), policy.read_text(encoding="utf-8"))
    kubernetes_validate.validate(docs[0], K8S_VERSION, strict=True)
    job = docs[1]["spec"]["metrics"][0]["provider"]["job"]
    meta = {"name": "harness-run", **job["metadata"]}
    as_job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job["spec"]}
    kubernetes_validate.validate(as_job, K8S_VERSION, strict=True)


def test_the_gate_job_parses_and_runs_as_the_gate_service_account() -> None:
    job = one("Job")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ctx = parse_args(container["args"])
    assert ctx.command.name == "gate"
    assert ctx.params["isvc"] == "mistral-7b"
    assert ctx.params["apply"] is True
    assert ctx.params["kubeconfig"] is None  # in-cluster credentials: the ServiceAccount's
    assert ctx.params["steps"] == "10,50,100"
    assert job["spec"]["backoffLimit"] == 0
    # The namespace is the pod's own, where the Role is bound: $(VAR) expands from env.
    assert ctx.params["namespace"] == "$(POD_NAMESPACE)"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {m["name"]: Path(m["mountPath"]) for m in container["volumeMounts"]}
    assert ctx.params["out"] == mounts["results"]
    assert ctx.params["scenario"].parent == mounts["scenario"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = one("ConfigMap", volumes["scenario"]["configMap"]["name"])
    text = configmap["data"][ctx.params["scenario"].name]
    scenario = validate(Scenario, yaml.safe_load(text), "configmap")
    assert scenario.target.url is None  # the gate gives each run its URL
    # The policy it names is in the image: deploy/Dockerfile copies slo/ to /opt/harness/slo.
    policy = Path(yaml.safe_load(text)["policy"])
    load_policy(ROOT / policy.relative_to(IMAGE_ROOT))
    assert "COPY slo ./slo" in (DEPLOY / "Dockerfile").read_text(encoding="utf-8")

    account = one("ServiceAccount")["metadata"]["name"]
    assert pod["serviceAccountName"] == account
    for binding in (d for d in gate_docs() if d["kind"] == "RoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
        one("Role", binding["roleRef"]["name"])


def _granted() -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for role in (d for d in gate_docs() if d["kind"] == "Role"):
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def _used() -> dict[tuple[str, str], set[str]]:
    """Every Kubernetes API call in harness/gate, as (group, resource) -> verbs."""
    out: dict[tuple[str, str], set[str]] = {}
    for path in sorted((ROOT / "harness" / "gate").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            found = _CALL.match(node.attr)
            if found is None:
                continue
            verb, kind = found.groups()
            assert kind in _RESOURCES, (
                f"{path.name} calls {node.attr}: add its resource to deploy/gate/rbac.yaml "
                "(and to this test's table)"
            )
            out.setdefault(_RESOURCES[kind], set()).add(_VERBS[verb])
    return out


def test_the_roles_allow_every_call_the_gate_makes_and_nothing_more() -> None:
    used, granted = _used(), _granted()
    assert (kserve.GROUP, kserve.PLURAL) in used
    assert used == granted
    for role in (d for d in gate_docs() if d["kind"] == "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
            if rule["resources"] != [kserve.PLURAL]:
                # Gateway objects: one named object each, never the whole namespace.
                assert len(rule.get("resourceNames", [])) == 1, rule


def workflow() -> dict[Any, Any]:
    doc: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return doc


def step(name: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = workflow()["jobs"]["gate"]["steps"]
    return next(s for s in steps if s.get("name") == name)


def test_the_workflow_validates_against_schemastores_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
         str(WORKFLOW)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_gates_with_apply_and_publishes_always() -> None:
    doc = workflow()
    assert "workflow_dispatch" in doc[True]  # YAML 1.1 reads the key `on` as True
    for name in ("Publish the summary", "Test report", "Keep the run folders"):
        assert step(name)["if"] == "always()", name
    assert "GITHUB_STEP_SUMMARY" in step("Publish the summary")["run"]
    assert step("Keep the run folders")["with"]["path"] == "results/"
    # Secrets reach the scripts as environment variables, never pasted into the script text.
    for s in doc["jobs"]["gate"]["steps"]:
        assert "${{" not in s.get("run", ""), s.get("name")


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A `run:` script as GitHub runs it: bash --noprofile --norc -eo pipefail."""
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=cwd,
        capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=False,
    )  # fmt: skip


def test_the_gate_steps_command_parses_with_the_real_cli(tmp_path: Path) -> None:
    """The step's script, run with a stand-in `harness` that records its arguments."""
    record = tmp_path / "args"
    fake = tmp_path / "bin" / "harness"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\0" "$@" > {record}\n', encoding="utf-8")
    fake.chmod(0o755)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "ISVC": "mistral-7b",
           "NAMESPACE": "mlops-serving", "KUBECONFIG": "/tmp/kubeconfig"}  # fmt: skip
    for storage_uri in ("", "s3://models/v2"):
        done = _bash(step("Gate")["run"], tmp_path, {**env, "STORAGE_URI": storage_uri})
        assert done.returncode == 0, done.stderr
        ctx = parse_args(record.read_text(encoding="utf-8").split("\0")[:-1])
        assert ctx.command.name == "gate"
        assert (ctx.params["isvc"], ctx.params["namespace"]) == ("mistral-7b", "mlops-serving")
        assert ctx.params["apply"] is True
        assert ctx.params["kubeconfig"] == "/tmp/kubeconfig"
        assert ctx.params["storage_uri"] == (storage_uri or None)
        assert (ROOT / ctx.params["scenario"]).is_file()


def _gate_folder(results: Path) -> Path:
    """The layout `harness gate` writes: <stamp>-gate-<isvc>-<hex>/, step-N/{canary,baseline}/."""
    gate = results / "20260101T000000Z-gate-mistral-7b-ab12"
    for role in ("canary", "baseline"):
        run = gate / "step-10" / role / "20260101T000001Z-canary-gate-cd34"
        run.mkdir(parents=True)
        (run / "summary.md").write_text(f"{role} summary: PASS\n", encoding="utf-8")
        (run / "junit.xml").write_text("<testsuite/>\n", encoding="utf-8")
    document = {"decision": "ROLLBACK", "reason": "at 10 %: the canary FAILs the policy"}
    (gate / "gate.json").write_text(json.dumps(document), encoding="utf-8")
    return gate


def test_the_published_paths_match_the_gates_layout(tmp_path: Path) -> None:
    _gate_folder(tmp_path / "results")
    pattern = step("Test report")["with"]["report_paths"]
    found = sorted(p.relative_to(tmp_path).parts[2:4] for p in tmp_path.glob(pattern))
    assert found == [("step-10", "baseline"), ("step-10", "canary")]


def test_the_summary_step_writes_the_decision_and_the_canary_summaries(tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq not installed (GitHub's runners have it)")
    summary = tmp_path / "summary.md"
    env = {"ISVC": "mistral-7b", "GITHUB_STEP_SUMMARY": str(summary)}
    done = _bash(step("Publish the summary")["run"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert "No gate folder" in summary.read_text(encoding="utf-8")

    summary.unlink()
    _gate_folder(tmp_path / "results")
    done = _bash(step("Publish the summary")["run"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("## Canary gate: ROLLBACK\n\nat 10 %: the canary FAILs the policy\n")
    assert "### step-10 canary\n\ncanary summary: PASS" in text
    assert "baseline summary" not in text
