"""Every shipped scenario and policy loads; bad input names file, key path and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError, ExitCode
from harness.spec.load import ClosedLoop, PoissonArrivals
from harness.spec.policy import Band, load_policy
from harness.spec.scenario import load_scenario, policy_path
from harness.spec.study import load_study, relative_to_study

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.name)
def test_every_scenario_loads_with_its_policy(path: Path) -> None:
    scenario = load_scenario(path)
    policy = load_policy(policy_path(path, scenario))
    assert policy.objectives


@pytest.mark.parametrize(
    "path", sorted((ROOT / "scenarios" / "studies").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_study_loads_with_its_scenario(path: Path) -> None:
    study = load_study(path)
    scenario_file = relative_to_study(path, study.scenario)
    load_policy(policy_path(scenario_file, load_scenario(scenario_file)))
    assert study.size >= 2


@pytest.mark.parametrize("path", sorted((ROOT / "slo").glob("*.yaml")), ids=lambda p: p.name)
def test_every_policy_loads(path: Path) -> None:
    assert load_policy(path).objectives


def test_runbook_policy_is_the_runbook_table() -> None:
    policy = load_policy(ROOT / "slo" / "runbook.yaml")
    by_name = {o.name: o for o in policy.objectives}
    p50, p99, err, gpu = (by_name[n] for n in ("p50-latency", "p99-latency", "error-rate",
                                                "gpu-utilization"))  # fmt: skip
    assert (p50.metric, p50.stat, p50.target, p50.alert) == ("e2el", "p50", 0.5, 1.0)
    assert (p99.metric, p99.stat, p99.target, p99.alert) == ("e2el", "p99", 2.0, 5.0)
    assert (err.metric, err.target, err.alert) == ("error_rate", 0.001, 0.01)
    assert gpu.metric == "gpu.utilization"
    assert gpu.target == Band(min=0.6, max=0.8)
    assert gpu.alert == pytest.approx(0.95)
    assert all(o.critical for o in (p50, p99, err))


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _problems(path: Path, loader: object = load_scenario) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        loader(path)  # type: ignore[operator]
    assert info.value.exit_code == ExitCode.USAGE
    assert str(path) in str(info.value)
    return info.value.problems


MINIMAL = "name: s\nload: {arrival: {type: poisson, rate: 2}, duration_s: 5}\n"


def test_minimal_scenario_defaults(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, MINIMAL))
    assert isinstance(sc.load.arrival, PoissonArrivals)
    assert sc.target.url is None
    assert sc.target.api_key_env == "OPENAI_API_KEY"


def test_unknown_key_is_named_with_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "target: {urll: http://x}\n")
    assert _problems(path) == [("target.urll", "unknown key (not allowed here; check spelling)")]


def test_wrong_type_names_path_and_expectation(tmp_path: Path) -> None:
    text = "name: s\nload: {arrival: {type: poisson, rate: fast}, duration_s: 5}\n"
    [(where, what)] = _problems(_write(tmp_path, text))
    assert where == "load.arrival.rate"
    assert "number" in what
    assert "'fast'" in what


def test_unknown_arrival_type(tmp_path: Path) -> None:
    text = "name: s\nload: {arrival: {type: burst}, duration_s: 5}\n"
    [(where, what)] = _problems(_write(tmp_path, text))
    assert where == "load.arrival"
    assert "poisson" in what
    assert "concurrency" in what


def test_missing_required_key(tmp_path: Path) -> None:
    assert _problems(_write(tmp_path, "name: s\n")) == [("load", "required key is missing")]


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    [(where, what)] = _problems(_write(tmp_path, "name: s\nload: [\n"))
    assert where.startswith("line ")
    assert "invalid YAML" in what


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    [(_, what)] = _problems(_write(tmp_path, "- a\n- b\n"))
    assert "mapping" in what


def test_missing_file(tmp_path: Path) -> None:
    assert _problems(tmp_path / "nope.yaml") == [("", "file not found")]


def test_bad_url(tmp_path: Path) -> None:
    [(where, what)] = _problems(_write(tmp_path, MINIMAL + "target: {url: localhost:8000}\n"))
    assert where == "target.url"
    assert "http://" in what


def test_bad_simulator_setting_is_refused(tmp_path: Path) -> None:
    [(where, _)] = _problems(_write(tmp_path, MINIMAL + "target: {sim: {max_num_seqz: 4}}\n"))
    assert where == "target.sim.max_num_seqz"


def test_overrides_apply_before_validation(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    sc = load_scenario(path, ["load.arrival=null", "load.arrival.type=concurrency",
                              "load.arrival.users=3", "load.duration_s=9"])  # fmt: skip
    assert isinstance(sc.load.arrival, ClosedLoop)
    assert sc.load.arrival.users == 3
    assert sc.load.duration_s == 9


def test_override_errors_name_the_flag(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_scenario(path, ["load.duration_s"])
    assert "KEY=VALUE" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_scenario(path, ["load.duration_s=-1"])
    assert info.value.problems[0][0] == "load.duration_s"


POLICY = """name: p
objectives:
  - {name: a, metric: e2el, stat: p99, target: 2s, alert: 5s}
"""


def test_policy_quantities(tmp_path: Path) -> None:
    text = POLICY + "  - {name: b, metric: error_rate, stat: value, target: 0.1%, alert: 1%}\n"
    policy = load_policy(_write(tmp_path, text, "p.yaml"))
    assert policy.objectives[1].target == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("objective", "where", "fragment"),
    [
        ("{name: b, metric: ttfb, stat: p99, target: 1}", "objectives[1].metric", "unknown metric"),
        ("{name: b, metric: ttft, stat: p100, target: 1}", "objectives[1]", "percentile"),
        ("{name: b, metric: ttft, stat: p99, target: 1kg}", "objectives[1]", "unit 'kg'"),
        ("{name: b, metric: ttft, stat: p99, target: 2s, alert: 1s}", "objectives[1]", "alert"),
        ("{name: b, metric: error_rate, stat: p99, target: 1%}", "objectives[1]", "value"),
        ("{name: b, metric: error_rate, stat: value, target: 5}", "objectives[1]", "[0, 1]"),
        ("{name: a, metric: ttft, stat: p99, target: 1}", "", "used twice"),
        ("{name: b, metric: ttft, stat: p99, target: 1, critcal: true}",
         "objectives[1].critcal", "unknown key"),
    ],
)  # fmt: skip
def test_bad_objectives(tmp_path: Path, objective: str, where: str, fragment: str) -> None:
    path = _write(tmp_path, POLICY + f"  - {objective}\n", "p.yaml")
    problems = _problems(path, load_policy)
    assert any(w == where and fragment in what for w, what in problems), problems
