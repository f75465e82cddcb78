"""Random bad files never crash the loaders: every failure is a ConfigError naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from harness.errors import ConfigError
from harness.spec.policy import load_policy
from harness.spec.scenario import load_scenario

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
    st.text(max_size=12),
)  # fmt: skip
keys = st.sampled_from(
    ["name", "load", "arrival", "type", "rate", "duration_s", "target", "url", "workload",
     "objectives", "metric", "stat", "target", "alert", "poisson", "concurrency", "users",
     "max_tokens", "sim", "policy", "schema", "goodput", "e2el", "zzz"]
)  # fmt: skip
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def _check(loader: Any, path: Path) -> None:
    try:
        loader(path)
    except ConfigError as exc:
        problems, text = exc.problems, str(exc)
    else:
        return
    assert str(path) in text
    assert problems


@FUZZ
@given(doc=documents)
@example(doc={"objectives": [{"metric": []}]})  # once crashed the policy loader
def test_random_documents_never_crash_loaders(tmp_path: Path, doc: Any) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    _check(load_scenario, path)
    _check(load_policy, path)


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text_never_crashes_loaders(tmp_path: Path, text: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    _check(load_scenario, path)
    _check(load_policy, path)
