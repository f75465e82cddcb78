"""`harness capacity` on the simulator, whose capacity follows from its settings.

The derivation (tests/data/scenarios/capacity.yaml): in a closed loop of N users with
N <= max_num_seqs, every user's request is in every step's batch, so each step takes
s(N) = b + c N (step_base_s b = 2.41 ms, per_seq_s c = 1.2 ms, no prefill cost). A request
of T = 16 output tokens takes T steps (the prefill step yields the first token), plus part
of the step in progress when it arrives (between none and all of it), so T s(N) <= E2EL <=
(T + 1) s(N), the same for every request (p90 = p50 = mean, up to a millisecond of timer
jitter). The policy asks E2EL p90 <= L = 500 ms, so the capacity N* lies between
(L / (T + 1) - b) / c = 22.5 and (L / T - b) / c = 24.03 users; the search must land within
5 % of that range. No request ever waits for a slot (64 of them): the binding
constraint is the step time growing with the batch, not the batch limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import ROOT, read_json, run_cli

from harness.errors import ExitCode

pytestmark = pytest.mark.e2e

SCENARIO = "tests/data/scenarios/capacity.yaml"


def derived_capacity() -> tuple[float, float]:
    """N* between (L / (T + 1) - b) / c and (L / T - b) / c, from the scenario's and the
    policy's files."""
    doc = yaml.safe_load((ROOT / SCENARIO).read_text())
    sim, tokens = doc["target"]["sim"], doc["workload"]["max_tokens"]
    assert sim["prefill_per_token_s"] == 0
    policy = yaml.safe_load((ROOT / "tests/data/policies/capacity.yaml").read_text())
    (latency,) = [o for o in policy["objectives"] if o["metric"] == "e2el"]
    bound = float(latency["target"].removesuffix("ms")) / 1000
    low, high = ((bound / steps - sim["step_base_s"]) / sim["per_seq_s"]
                 for steps in (tokens + 1, tokens))  # fmt: skip
    assert high < sim["max_num_seqs"]  # every user in the batch: no queue
    return float(low), float(high)


def test_the_search_lands_on_the_derived_capacity_and_names_what_binds(
    tmp_path: Path,
) -> None:
    low, high = derived_capacity()
    assert low == pytest.approx(22.5, abs=0.01)
    assert high == pytest.approx(24.03, abs=0.01)
    proc = run_cli("capacity", SCENARIO, "--out", str(tmp_path), "--peak-rps", "100",
                   "--gpu-hour-price", "2.5", timeout=600)  # fmt: skip
    assert proc.returncode == ExitCode.PASS, proc.stdout + proc.stderr
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    doc: dict[str, Any] = read_json(folder / "capacity.json")
    assert doc["outcome"] == "FOUND"
    found = doc["capacity"]["level"]
    assert 0.95 * low <= found <= 1.05 * high, doc["capacity"]
    assert len(doc["probes"]) <= 8
    held, broke = doc["capacity"]["bracket"]
    assert broke - held <= 1
    binding = doc["binding_constraint"]
    assert any(name.startswith("p90-latency") for name in binding["objectives"])
    (sign,) = binding["signs"]  # the step time, not a queue for slots
    assert "the latency grows with the batch" in sign, binding
    # at the capacity each user completes a request every E2EL: N / ((T + 1) s(N)) req/s
    level = found
    rate = level / (17 * (0.00241 + 0.0012 * level))
    assert doc["capacity"]["request_rate"] == pytest.approx(rate, rel=0.1)
    plan = doc["plan"]["inference_service_patch"]["spec"]["predictor"]
    assert plan["maxReplicas"] == 3  # 100 / (45 x 0.8) = 2.8
    assert plan["scaleMetric"] == "concurrency"
    assert doc["cost_per_1k_output_tokens"] > 0
    for probe in doc["probes"]:  # each probe is a run folder evaluate can re-judge
        assert (Path(probe["run_dir"]) / "verdict.json").is_file()
    summary = (folder / "summary.md").read_text()
    assert f"Highest load held: **{found:g} users**" in summary
    assert "capacity: FOUND" in proc.stdout


def test_a_scenario_with_stages_is_refused_with_exit_2(tmp_path: Path) -> None:
    proc = run_cli("capacity", "scenarios/steps.yaml", "--out", str(tmp_path))
    assert proc.returncode == ExitCode.USAGE, proc.stdout + proc.stderr
    assert "load.stages: a capacity search probes one level at a time" in proc.stderr
