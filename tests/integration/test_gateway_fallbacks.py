"""A failing backend behind the real LiteLLM proxy's fallback: every answer is a 200, the
records say who served it, and the verdict fails.

The proxy routes model group `primary` to a simulator that answers every request HTTP 500
and falls back to group `fallback` on a healthy simulator. Counted by status alone the run
is spotless; the runbook policy counts a fallback-served request as an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import ROOT, only_run_dir, read_json, run_cli
from support.litellm_proxy import LitellmHandle, fallback_config, litellm_with_config

from harness.errors import ExitCode
from harness.load.target import simulator
from harness.records.log import read_frame

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("litellm_bin")]

KEY_ENV = "HARNESS_TEST_GATEWAY_KEY"
MASTER_KEY = "sk-test-fallback-master-key"


def _scenario(folder: Path, proxy: LitellmHandle, model: str, expect: str, policy: Path) -> Path:
    spec: dict[str, Any] = {
        "schema": 1,
        "name": f"through-{model}",
        "target": {
            "url": proxy.base_url,
            "model": model,
            "api_key_env": KEY_ENV,
            "expect_backend": expect,
        },
        "workload": {"type": "synthetic", "prompt_tokens": 16, "max_tokens": 8, "seed": 1},
        "load": {
            "arrival": {"type": "poisson", "rate": 6, "max_concurrency": 16},
            "warmup_s": 1,
            "duration_s": 3,
            "drain_timeout_s": 10,
        },
        "collect": {"gpu": "off", "servers": []},
        "policy": str(policy),
    }
    path = folder / f"{model}.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _policy(folder: Path, name: str, *, as_error: bool, fallback_objective: bool) -> Path:
    """Error-rate bounds a run of a few dozen requests can decide either way."""
    objectives: list[dict[str, Any]] = [
        {"name": "errors", "metric": "error_rate", "stat": "value", "target": "50%", "alert": "60%"}
    ]
    if fallback_objective:
        objectives.append(
            {"name": "fallbacks", "metric": "fallback_rate", "stat": "value", "target": "50%"}
        )
    doc = {"schema": 1, "name": name, "fallback_counts_as_error": as_error,
           "objectives": objectives}  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_a_fallback_served_200_fails_the_runbook_policy(tmp_path: Path) -> None:
    env = {KEY_ENV: MASTER_KEY}
    runbook = ROOT / "slo/runbook.yaml"
    with (
        simulator({"error_rate": 1.0}) as failing,
        simulator({}) as healthy,
        litellm_with_config(fallback_config(failing, healthy, MASTER_KEY), MASTER_KEY) as proxy,
    ):
        scenario = _scenario(tmp_path, proxy, "primary", failing, runbook)
        proc = run_cli("run", str(scenario), "--out", str(tmp_path / "runs"), env=env)
        assert proc.returncode == ExitCode.FAIL, proc.stdout + proc.stderr
        run_dir = only_run_dir(tmp_path / "runs")

        records = read_frame(run_dir)
        assert len(records) >= 5
        assert set(records["status"]) == {200}  # by status code alone, nothing went wrong
        assert records["error"].isna().all()
        assert set(records["served_by"]) == {healthy}
        assert (records["fallbacks"] >= 1).all()
        assert set(records["served_model"]) == {"fallback"}  # the group that served the stream

        verdict = read_json(run_dir / "verdict.json")
        assert verdict["decision"] == "FAIL"
        by_name = {o["name"]: o for o in verdict["objectives"]}
        assert by_name["error-rate"]["verdict"] == "FAIL"
        assert by_name["error-rate"]["estimate"] == 1.0
        measured = verdict["summary"]["requests"]
        assert verdict["summary"]["error_classes"] == {"fallback": measured}
        fallbacks = verdict["summary"]["fallbacks"]
        assert fallbacks["requests"] == measured
        assert fallbacks["counted_as_errors"] is True
        assert fallbacks["served_by"] == {healthy: measured}
        assert "served by a fallback" in proc.stdout

        # Counted by status alone, the same records pass; a fallback_rate objective fails them.
        plain = _policy(tmp_path, "plain", as_error=False, fallback_objective=False)
        passed = run_cli("evaluate", str(run_dir), "--policy", str(plain))
        assert passed.returncode == ExitCode.PASS, passed.stdout + passed.stderr
        bounded = _policy(tmp_path, "bounded", as_error=False, fallback_objective=True)
        failed = run_cli("evaluate", str(run_dir), "--policy", str(bounded))
        assert failed.returncode == ExitCode.FAIL, failed.stdout + failed.stderr
        fallback_result = read_json(run_dir / "verdict.json")["objectives"][1]
        assert (fallback_result["name"], fallback_result["verdict"]) == ("fallbacks", "FAIL")

        # The healthy group asked for directly: served where expected, nothing counted.
        strict = _policy(tmp_path, "strict", as_error=True, fallback_objective=True)
        direct = _scenario(tmp_path, proxy, "fallback", healthy, strict)
        ok = run_cli("run", str(direct), "--out", str(tmp_path / "direct"), env=env)
        assert ok.returncode == ExitCode.PASS, ok.stdout + ok.stderr
        served = read_frame(only_run_dir(tmp_path / "direct"))
        assert set(served["served_by"]) == {healthy}
        assert (served["fallbacks"] == 0).all()
        assert set(served["served_model"]) == {"fallback"}
        assert (
            "fallbacks"
            not in read_json(only_run_dir(tmp_path / "direct") / "verdict.json")["summary"]
        )
