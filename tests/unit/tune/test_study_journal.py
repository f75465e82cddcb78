"""The study's bookkeeping on a real Optuna journal, with a measurement stood in by a
function of the setting (no server): every setting once, a cut setting measured again on
resume and nothing else, a failed launch final, and a journal of another study refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import UsageError
from harness.spec.config import validate
from harness.spec.study import Scalar, Study
from harness.tune.launch import LaunchFailed
from harness.tune.results import pareto
from harness.tune.study import Measured, definition, open_study, progress, run_study, trials_of


def make_study(**extra: Any) -> Study:
    doc: dict[str, Any] = {
        "name": "unit",
        "scenario": "s.yaml",
        "launcher": {"type": "sim"},
        "grid": {"max_num_seqs": [2, 4, 8, 16]},
    }
    doc.update(extra)
    return validate(Study, doc, "study.yaml")


class Bench:
    """Stands in for a server and a run: throughput grows with the batch limit, latency falls;
    can be told to be interrupted at the k-th setting or to fail some launches."""

    def __init__(
        self, interrupt_at: int | None = None, refuse: int | None = None,
        invalid: dict[int, int] | None = None,
    ) -> None:  # fmt: skip
        self.measured: list[dict[str, Scalar]] = []
        self.interrupt_at, self.refuse = interrupt_at, refuse
        self.invalid = dict(invalid or {})  # batch limit -> invalid runs left

    def __call__(self, setting: dict[str, Scalar], trial_dir: Path) -> Measured:
        m = int(setting["max_num_seqs"])
        if self.interrupt_at is not None and len(self.measured) + 1 == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt
        self.measured.append(setting)
        if m == self.refuse:
            raise LaunchFailed("the server exited with 1", ["CUDA out of memory"])
        if self.invalid.get(m):
            self.invalid[m] -= 1
            return Measured(None, None, "INVALID", {}, "load generator saturated")
        verdict = "PASS" if m >= 8 else "FAIL"
        return Measured(float(m * 10), 1.0 / m, verdict, {"requests": 100})


def study_in(tmp_path: Path, study: Study) -> Any:
    return open_study(study, tmp_path, definition(study, "scenario", "policy"), fresh=False)


def test_every_grid_setting_is_measured_once(tmp_path: Path) -> None:
    study = make_study()
    record, bench = study_in(tmp_path, study), Bench()
    run_study(study, record, tmp_path, bench, lambda t: None)
    assert sorted(int(s["max_num_seqs"]) for s in bench.measured) == [2, 4, 8, 16]
    trials = trials_of(record)
    assert [t.user_attrs["status"] for t in trials] == ["measured"] * 4


def test_an_interrupted_study_measures_only_what_is_left(tmp_path: Path) -> None:
    study = make_study()
    first = Bench(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, study_in(tmp_path, study), tmp_path, first, lambda t: None)
    assert len(first.measured) == 2
    state = progress(study_in(tmp_path, study))
    assert len(state.final) == 2
    assert len(state.retry) == 1
    second = Bench()
    record = study_in(tmp_path, study)
    run_study(study, record, tmp_path, second, lambda t: None)
    done = {int(s["max_num_seqs"]) for s in first.measured}
    again = {int(s["max_num_seqs"]) for s in second.measured}
    assert not done & again  # nothing measured twice
    assert done | again == {2, 4, 8, 16}
    assert len(trials_of(record)) == 4


def test_a_trial_a_kill_left_running_is_measured_again(tmp_path: Path) -> None:
    study = make_study()
    record = study_in(tmp_path, study)
    cut = record.ask()  # a kill: the trial stays RUNNING in the journal
    value = cut.suggest_categorical("max_num_seqs", [2, 4, 8, 16])
    bench = Bench()
    run_study(study, study_in(tmp_path, study), tmp_path, bench, lambda t: None)
    measured = [int(s["max_num_seqs"]) for s in bench.measured]
    assert sorted(measured) == [2, 4, 8, 16]
    assert measured.count(int(value)) == 1


def test_a_failed_launch_is_recorded_final_and_the_study_goes_on(tmp_path: Path) -> None:
    study = make_study()
    record = study_in(tmp_path, study)
    run_study(study, record, tmp_path, Bench(refuse=4), lambda t: None)
    by_seqs = {t.params["max_num_seqs"]: t for t in trials_of(record)}
    assert by_seqs[4].user_attrs["status"] == "launch_failed"
    assert by_seqs[4].user_attrs["log_tail"] == ["CUDA out of memory"]
    again = Bench()
    run_study(study, study_in(tmp_path, study), tmp_path, again, lambda t: None)
    assert again.measured == []  # a failed launch is not retried on resume


def test_a_journal_of_other_settings_is_refused(tmp_path: Path) -> None:
    study = make_study()
    run_study(study, study_in(tmp_path, study), tmp_path, Bench(), lambda t: None)
    other = make_study(grid={"max_num_seqs": [2, 4]})
    with pytest.raises(UsageError, match="--fresh"):
        study_in(tmp_path, other)
    fresh = open_study(other, tmp_path, definition(other, "scenario", "policy"), fresh=True)
    assert fresh.trials == []
    assert (tmp_path / "study.journal.old").is_file()


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_a_sampled_space_measures_its_trials(tmp_path: Path, sampler: str) -> None:
    study = make_study(grid=None, space={"max_num_seqs": {"low": 2, "high": 64, "log": True}},
                       trials=5, sampler=sampler)  # fmt: skip
    record, bench = study_in(tmp_path, study), Bench()
    run_study(study, record, tmp_path, bench, lambda t: None)
    assert len(trials_of(record)) == 5
    assert all(2 <= int(s["max_num_seqs"]) <= 64 for s in bench.measured)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 30),
                       st.tuples(st.floats(0, 1e4), st.floats(0, 10)), min_size=1))  # fmt: skip
def test_the_front_is_exactly_the_undominated_points(
    points: dict[int, tuple[float, float]],
) -> None:
    front = set(pareto(points))
    assert front
    for n, (tp, lat) in points.items():
        beaten = any(t >= tp and lt <= lat and (t > tp or lt < lat) for t, lt in points.values())
        assert (n in front) == (not beaten)


def test_an_invalid_run_is_measured_once_more_then_recorded(tmp_path: Path) -> None:
    study = make_study()
    record, bench = study_in(tmp_path, study), Bench(invalid={4: 1, 8: 5})
    run_study(study, record, tmp_path, bench, lambda t: None)
    measured = [int(s["max_num_seqs"]) for s in bench.measured]
    assert sorted(measured) == [2, 4, 4, 8, 8, 16]  # 4 recovers; 8 fails twice and stops
    by_seqs = {t.params["max_num_seqs"]: t.user_attrs for t in trials_of(record)}
    assert by_seqs[4]["status"] == "measured"
    assert by_seqs[8]["status"] == "error"
    assert by_seqs[8]["reason"] == "load generator saturated"
