"""The YAML loader's limits: an alias bomb is refused before anything walks it, duplicate keys
are refused with both lines, booleans never pass for numbers nor other values for booleans,
and an error shows a bounded excerpt of the value, never the whole input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ConfigError, ExitCode
from harness.spec.config import MAX_NODES, load_yaml_text
from harness.spec.policy import load_policy
from harness.spec.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "tests/data/scenarios/base.yaml"


def bomb(levels: int = 9) -> str:
    """The billion-laughs document: each level repeats the one before ten times."""
    lines = ["schema: 1", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def problems(path: Path, *overrides: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as err:
        load_scenario(path, list(overrides))
    assert err.value.exit_code is ExitCode.USAGE
    return err.value.problems


def test_an_alias_bomb_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(), encoding="utf-8")
    [(_, msg)] = problems(path)
    assert f"more than {MAX_NODES:,} values" in msg


def test_an_alias_bomb_fails_fast_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(path)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == ExitCode.USAGE
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr


def test_aliases_used_within_reason_still_load() -> None:
    doc = load_yaml_text("base: &b {rate: 5}\nx: *b\ny: *b\n")
    assert doc == {"base": {"rate": 5}, "x": {"rate": 5}, "y": {"rate": 5}}


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    text = BASE.read_text(encoding="utf-8").replace("name: base", "name: base\nname: other")
    path.write_text(text, encoding="utf-8")
    [(where, msg)] = problems(path)
    assert "duplicate key 'name'" in msg
    assert where.startswith("line ")


@pytest.mark.parametrize(
    ("override", "path", "words"),
    [
        ("load.arrival.rate=true", "load.arrival.rate", "a boolean where a number belongs"),
        ("load.duration_s=false", "load.duration_s", "a boolean where a number belongs"),
        ("workload.seed=true", "workload.seed", "a boolean where a number belongs"),
        ("target.stream=1", "target.stream", "not true or false"),
        ("target.stream='yes'", "target.stream", "not true or false"),
    ],
)
def test_scalars_of_the_wrong_kind_are_refused(override: str, path: str, words: str) -> None:
    [(where, msg)] = problems(BASE, override)
    assert where == path
    assert words in msg


def test_an_error_shows_a_bounded_excerpt_of_a_huge_value(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    huge = "[" + ", ".join(str(i) for i in range(50_000)) + "]"
    path.write_text(f"schema: 1\nname: p\nobjectives: {huge}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert len(str(err.value)) < 5_000
