"""Synthetic prompts: exact lengths for fixed counts, the right statistics for drawn ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml
from support.tiny_gguf import WORDS

from harness.spec.scenario import load_scenario
from harness.spec.vocabulary import VOCABULARY
from harness.workload.base import RequestSpec, Workload
from harness.workload.build import build_workload
from harness.workload.text import word_count

LOAD = {"arrival": {"type": "poisson", "rate": 1}, "duration_s": 1}


def build(tmp_path: Path, workload: dict[str, Any]) -> Workload:
    """A workload the way a run builds it: YAML file, scenario model, then build_workload."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "load": LOAD, "workload": workload}))
    return build_workload(load_scenario(path).workload, tmp_path, str(path))


def first_requests(workload: Workload, n: int, start: int = 0) -> list[RequestSpec]:
    """The single request of each of sessions start .. start+n-1 (and check there is one)."""
    out = []
    for index in range(start, start + n):
        session = workload.session(index)
        spec = session.next_request(None)
        assert spec is not None
        assert session.next_request("an answer") is None
        out.append(spec)
    return out


def test_fixed_lengths_are_exact(tmp_path: Path) -> None:
    wl = build(tmp_path, {"type": "synthetic", "prompt_tokens": 37, "max_tokens": 11})
    assert not wl.needs_reply_text
    specs = first_requests(wl, 200)
    for spec in specs:
        assert word_count(spec.prompt) == spec.planned_prompt_tokens == 37
        assert spec.max_tokens == 11
        assert spec.messages == (("user", spec.prompt),)
        assert (spec.session, spec.turn, spec.think_time_s) == (None, 0, 0.0)
        assert set(spec.prompt.split()) <= set(VOCABULARY)
    assert len({s.prompt for s in specs}) == 200  # distinct per request


def test_fixed_lengths_send_the_same_text_as_before_distributions(tmp_path: Path) -> None:
    # Scenarios written before distributions existed must keep sending the same prompts.
    wl = build(tmp_path, {"type": "synthetic", "prompt_tokens": 16, "seed": 5})
    vocab = np.array(VOCABULARY)
    for index, spec in enumerate(first_requests(wl, 10)):
        picks = np.random.default_rng((5, index)).integers(0, len(vocab), size=16)
        assert spec.prompt == " ".join(vocab[picks].tolist())


def test_vocabulary_is_one_token_a_word_for_the_tiny_test_model() -> None:
    assert set(VOCABULARY) <= set(WORDS)
    assert len(set(VOCABULARY)) == len(VOCABULARY)


def _check_moments(values: npt.NDArray[np.float64], mean: float, std: float) -> None:
    """Sample mean and std within 4 standard errors of the expected ones."""
    n = values.size
    s = values.std(ddof=1)
    kurtosis = float(np.mean((values - values.mean()) ** 4)) / s**4
    se_mean = s / np.sqrt(n)
    se_std = s * np.sqrt(max(kurtosis - 1.0, 0.0) / (4.0 * n))
    assert abs(values.mean() - mean) < 4 * se_mean, (values.mean(), mean, se_mean)
    assert abs(s - std) < 4 * se_std, (s, std, se_std)


def _lognormal_std(mean: float, sigma: float) -> float:
    return mean * float(np.sqrt(np.expm1(sigma**2)))


@pytest.mark.parametrize(
    ("dist", "mean", "std"),
    [
        ({"type": "uniform", "min": 50, "max": 150}, 100.0, np.sqrt((101**2 - 1) / 12)),
        ({"type": "normal", "mean": 300, "std": 40}, 300.0, np.sqrt(40**2 + 1 / 12)),
        ({"type": "lognormal", "mean": 200, "std": 100}, 200.0, 100.0),
        ({"type": "lognormal", "mean": 120, "sigma": 0.6}, 120.0, _lognormal_std(120, 0.6)),
    ],
    ids=["uniform", "normal", "lognormal-std", "lognormal-sigma"],
)
def test_drawn_prompt_lengths_have_the_asked_mean_and_spread(
    tmp_path: Path, dist: dict[str, Any], mean: float, std: float
) -> None:
    wl = build(tmp_path, {"type": "synthetic", "prompt_tokens": dist, "max_tokens": 8})
    specs = first_requests(wl, 8000)
    words = np.array([word_count(s.prompt) for s in specs], dtype=np.float64)
    assert words.tolist() == [s.planned_prompt_tokens for s in specs]
    assert {s.max_tokens for s in specs} == {8}
    _check_moments(words, mean, std)


def test_drawn_output_lengths_have_the_asked_mean_and_spread(tmp_path: Path) -> None:
    dist = {"type": "lognormal", "mean": 64, "std": 32}
    wl = build(tmp_path, {"type": "synthetic", "prompt_tokens": 4, "max_tokens": dist})
    out = np.array([s.max_tokens for s in first_requests(wl, 4000)], dtype=np.float64)
    _check_moments(out, 64.0, 32.0)


def test_uniform_reaches_both_ends_and_nothing_beyond(tmp_path: Path) -> None:
    dist = {"type": "uniform", "min": 3, "max": 7}
    wl = build(tmp_path, {"type": "synthetic", "prompt_tokens": dist})
    assert {s.planned_prompt_tokens for s in first_requests(wl, 500)} == {3, 4, 5, 6, 7}


def test_normal_is_clipped_to_min_and_max(tmp_path: Path) -> None:
    dist = {"type": "normal", "mean": 12, "std": 50, "min": 5, "max": 20}
    wl = build(tmp_path, {"type": "synthetic", "prompt_tokens": dist})
    lengths = [s.planned_prompt_tokens for s in first_requests(wl, 500)]
    assert min(lengths) == 5
    assert max(lengths) == 20


def test_lengths_are_never_below_one(tmp_path: Path) -> None:
    dist = {"type": "normal", "mean": 1, "std": 30}
    wl = build(tmp_path, {"type": "synthetic", "prompt_tokens": dist, "max_tokens": dist})
    specs = first_requests(wl, 500)
    assert min(s.planned_prompt_tokens for s in specs) == 1
    assert min(s.max_tokens for s in specs) == 1
    assert all(word_count(s.prompt) == s.planned_prompt_tokens for s in specs)


def test_same_seed_same_requests_other_seed_other_requests(tmp_path: Path) -> None:
    dist = {"type": "uniform", "min": 5, "max": 50}
    spec: dict[str, Any] = {"type": "synthetic", "prompt_tokens": dist, "max_tokens": dist}
    a = first_requests(build(tmp_path, {**spec, "seed": 3}), 50)
    b = first_requests(build(tmp_path, {**spec, "seed": 3}), 50)
    c = first_requests(build(tmp_path, {**spec, "seed": 4}), 50)
    assert a == b
    assert [s.prompt for s in a] != [s.prompt for s in c]
    assert [s.max_tokens for s in a] != [s.max_tokens for s in c]
    # Session i does not depend on which sessions were asked for before it.
    assert first_requests(build(tmp_path, {**spec, "seed": 3}), 10, start=40) == a[40:]


def test_manifest_dump_keeps_plain_numbers_and_reloads(tmp_path: Path) -> None:
    dist = {"type": "normal", "mean": 30.0, "std": 5.0, "min": 1, "max": None}
    path = tmp_path / "s.yaml"
    wl = {"type": "synthetic", "prompt_tokens": 64, "max_tokens": dist}
    path.write_text(yaml.safe_dump({"name": "s", "load": LOAD, "workload": wl}))
    dumped = load_scenario(path).model_dump(mode="json", by_alias=True)
    assert dumped["workload"]["prompt_tokens"] == 64
    assert dumped["workload"]["max_tokens"] == dist
    path.write_text(yaml.safe_dump(dumped))
    assert load_scenario(path).model_dump(mode="json", by_alias=True) == dumped
