"""Bad workload sections are ConfigErrors naming the scenario file, the key path and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.errors import ConfigError, ExitCode
from harness.spec.scenario import load_scenario
from harness.workload.build import build_workload

LOAD = {"arrival": {"type": "poisson", "rate": 1}, "duration_s": 1}


def _scenario(tmp_path: Path, workload: dict[str, Any]) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "load": LOAD, "workload": workload}))
    return path


def _problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        build_workload(load_scenario(path).workload, path.parent, str(path))
    assert info.value.exit_code == ExitCode.USAGE
    assert str(path) in str(info.value)
    return info.value.problems


SYN = {"type": "synthetic"}


@pytest.mark.parametrize(
    ("workload", "where", "fragment"),
    [
        ({**SYN, "prompt_tokens": {"type": "uniform", "min": 9, "max": 3}},
         "workload.prompt_tokens", "min (9) must not exceed max (3)"),
        ({**SYN, "prompt_tokens": {"type": "normal", "mean": 9, "std": -1}},
         "workload.prompt_tokens.std", "greater than or equal to 0"),
        ({**SYN, "max_tokens": {"type": "normal", "mean": 9, "std": 1, "min": 8, "max": 2}},
         "workload.max_tokens", "must not exceed"),
        ({**SYN, "max_tokens": {"type": "lognormal", "mean": 9}},
         "workload.max_tokens", "exactly one of sigma"),
        ({**SYN, "max_tokens": {"type": "lognormal", "mean": 9, "sigma": 1, "std": 2}},
         "workload.max_tokens", "exactly one of sigma"),
        ({**SYN, "max_tokens": {"type": "lognormal", "mean": 0, "sigma": 1}},
         "workload.max_tokens.mean", "greater than 0"),
        ({**SYN, "prompt_tokens": {"type": "zipf", "a": 2}},
         "workload.prompt_tokens", "'fixed', 'uniform', 'normal', 'lognormal'"),
        ({**SYN, "prompt_tokens": {"type": "fixed", "value": 3, "mean": 3}},
         "workload.prompt_tokens.mean", "unknown key"),
        ({**SYN, "prompt_tokens": 0}, "workload.prompt_tokens", "whole number from 1"),
        ({**SYN, "prompt_tokens": True}, "workload.prompt_tokens", "a distribution such as"),
        ({**SYN, "prompt_tokens": 1.5}, "workload.prompt_tokens", "a distribution such as"),
        ({**SYN, "prompt_token": 8}, "workload.prompt_token", "unknown key"),
        ({**SYN, "seed": -1}, "workload.seed", "greater than or equal to 0"),
        ({"type": "burst"}, "workload", "'synthetic', 'sharegpt', 'jsonl', 'shared_prefix'"),
        ({"type": "sharegpt"}, "workload.path", "required key is missing"),
        ({"type": "sharegpt", "path": "x.json", "max_tokens": {"type": "uniform", "min": 3,
                                                             "max": 1}},
         "workload.max_tokens", "must not exceed"),
        ({"type": "shared_prefix", "num_prefixes": 1000, "prefix_tokens": 1},
         "workload.prefix_tokens", "expected at least 2"),
        ({"type": "shared_prefix", "num_prefixes": 200,
          "prefix_tokens": {"type": "uniform", "min": 1, "max": 50}},
         "workload.prefix_tokens", "expected at least 2"),
        ({"type": "multi_turn", "turns": {"type": "uniform", "min": 0, "max": 3}},
         "workload.turns.min", "greater than or equal to 1"),
        ({"type": "multi_turn", "think_time_s": -1}, "workload.think_time_s", "greater than"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key(
    tmp_path: Path, workload: dict[str, Any], where: str, fragment: str
) -> None:
    problems = _problems(_scenario(tmp_path, workload))
    assert any(w == where and fragment in what for w, what in problems), problems


@pytest.mark.parametrize("kind", ["sharegpt", "jsonl"])
def test_missing_dataset_file_names_the_path_key_when_built(tmp_path: Path, kind: str) -> None:
    path = _scenario(tmp_path, {"type": kind, "path": "data/nope.json"})
    load_scenario(path)  # the scenario itself is valid: the file is looked for at build time
    [(where, what)] = _problems(path)
    assert where == "workload.path"
    assert str(tmp_path / "data" / "nope.json") in what
    assert "expected an existing file" in what


def test_key_prefix_is_the_callers(tmp_path: Path) -> None:
    path = _scenario(tmp_path, {"type": "jsonl", "path": "nope.jsonl"})
    spec = load_scenario(path).workload
    with pytest.raises(ConfigError) as info:
        build_workload(spec, tmp_path, "study.yaml", key="settings[2].workload")
    assert info.value.file == "study.yaml"
    assert info.value.problems[0][0] == "settings[2].workload.path"
