"""Every shipped scenario's workload builds (datasets found) and produces requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.spec.scenario import load_scenario
from harness.workload.build import build_workload
from harness.workload.text import word_count

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_every_scenario_workload_builds(path: Path) -> None:
    workload = build_workload(load_scenario(path).workload, path.parent, str(path))
    for index in range(20):
        spec = workload.session(index).next_request(None)
        assert spec is not None
        assert spec.max_tokens >= 1
        assert word_count(spec.prompt) >= 1


def test_sharegpt_sample_skips_what_vllm_skips() -> None:
    path = ROOT / "scenarios" / "sharegpt-sample.yaml"
    workload = build_workload(load_scenario(path).workload, path.parent, str(path))
    specs = [workload.session(i).next_request(None) for i in range(40)]
    prompts = {spec.prompt for spec in specs if spec is not None}
    assert len(prompts) == 11  # 12 conversations; "Hi" is shorter than min_tokens
    assert "Hi" not in prompts
