"""The study's bookkeeping on Optuna: which setting comes next, what was measured, and a
journal file an interrupted study resumes from.

Optuna holds the trials (a JournalStorage: an append-only file, safe to kill at any point)
and picks the settings: its grid sampler walks every combination; TPE, NSGA-II or random
sampling explore a space, favouring settings that pass the policy (the constraint) and the
Pareto front of throughput against latency (two objectives). Our part is what Optuna leaves
to its caller: a trial cut short by an interrupt or a kill is measured again on resume (a
grid marks it visited, so it is queued again with its own values), a setting whose server
did not start is final (recorded, never retried), and the study refuses to resume from a
journal written for other settings, another scenario or another policy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState

from harness.errors import HarnessError, UsageError
from harness.spec.study import Range, Scalar, Study
from harness.tune.launch import LaunchFailed

JOURNAL: Final = "study.journal"
#: Statuses (a trial's user attribute) that end a setting for good; "error" does so only
#: after ATTEMPTS invalid runs.
FINAL: Final = frozenset({"measured", "launch_failed"})
#: Runs of a setting whose measurement was invalid before its error is final.
ATTEMPTS: Final = 2


@dataclass(frozen=True, slots=True)
class Measured:
    """One setting's measurement: the two objective values and what the table shows."""

    throughput: float | None
    latency: float | None
    verdict: str | None
    attrs: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # why a value is missing


class SettingError(HarnessError):
    """A setting that started but could not be measured (its run was invalid): final."""


#: Measures one setting: (the full setting, the trial's folder) -> Measured.
Measure = Callable[[dict[str, Scalar], Path], Measured]


def definition(study: Study, scenario_text: str, policy_text: str) -> str:
    """What a journal's measurements depend on; a resumed study must match it."""
    spec = study.model_dump(mode="json", by_alias=True, exclude={"description"})
    digest = hashlib.sha256((scenario_text + "\0" + policy_text).encode()).hexdigest()[:16]
    return json.dumps({"study": spec, "inputs": digest}, sort_keys=True)


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One `harness tune` per study folder: a second one would take the first one's running
    trial for an interrupted one."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "study.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"{folder}: another `harness tune` is running this study") from None
        yield


def open_study(study: Study, folder: Path, ident: str, fresh: bool) -> optuna.Study:
    """The study's Optuna record in ``folder`` (created, or resumed when it matches)."""
    optuna.logging.set_verbosity(logging.ERROR)  # failures are reported as our own lines
    journal = folder / JOURNAL
    if fresh and journal.exists():
        journal.rename(folder / f"{JOURNAL}.old")
    storage = JournalStorage(JournalFileBackend(str(journal)))
    directions: list[Literal["maximize", "minimize"]] = ["maximize", "minimize"]
    existing = {s.study_name for s in storage.get_all_studies()}
    if study.name in existing:
        record = optuna.load_study(study_name=study.name, storage=storage,
                                   sampler=_sampler(study))  # fmt: skip
        if record.user_attrs.get("definition") != ident:
            raise UsageError(
                f"{folder}: this folder holds study {study.name!r} measured with other "
                "settings, scenario or policy; rerun with --fresh to start over (the old "
                "journal is kept as study.journal.old), or give another --out"
            )
        return record
    record = optuna.create_study(study_name=study.name, storage=storage,
                                 sampler=_sampler(study), directions=directions)  # fmt: skip
    record.set_user_attr("definition", ident)
    return record


def _sampler(study: Study) -> optuna.samplers.BaseSampler:
    name = study.sampler_name
    if name == "grid":
        return optuna.samplers.GridSampler(dict(study.grid or {}), seed=study.seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=study.seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=study.seed)
    return optuna.samplers.TPESampler(seed=study.seed)


def _suggest(study: Study, trial: Trial) -> dict[str, Scalar]:
    values: dict[str, Scalar] = {}
    for name, choices in (study.grid or {}).items():
        values[name] = _choice(trial, name, choices)
    for name, space in (study.space or {}).items():
        if isinstance(space, Range):
            low, high, step = space.low, space.high, space.step
            sampled: Scalar
            if space.integer:
                sampled = trial.suggest_int(name, int(low), int(high), step=int(step or 1),
                                            log=space.log)  # fmt: skip
            else:
                sampled = trial.suggest_float(name, float(low), float(high), step=step,
                                              log=space.log)  # fmt: skip
            values[name] = sampled
        else:
            values[name] = _choice(trial, name, space)
    return values


def _choice(trial: Trial, name: str, choices: list[Scalar]) -> Scalar:
    value = trial.suggest_categorical(name, choices)
    assert value is not None  # one of the choices, none of them null
    return value


def _key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)


@dataclass
class Progress:
    """What the study has done so far, recomputed from the journal."""

    final: dict[str, FrozenTrial]  # setting key -> the trial that measured (or failed) it
    retry: list[dict[str, Any]]  # settings cut short, not yet measured again
    waiting: int  # settings queued in the journal


def progress(record: optuna.Study) -> Progress:
    """Settings finished for good, settings to measure again (cut short by an interrupt or a
    kill, whose trial left RUNNING is failed here as this process holds the study's lock, or
    measured once by an invalid run), and settings queued."""
    storage = record._storage
    final: dict[str, FrozenTrial] = {}
    cut: dict[str, dict[str, Any]] = {}
    queued: set[str] = set()
    errors: dict[str, int] = {}
    for trial in record.get_trials(deepcopy=False):
        status = trial.user_attrs.get("status")
        if trial.state == TrialState.RUNNING:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            cut[_key(trial.params)] = dict(trial.params)
        elif trial.state == TrialState.WAITING:
            queued.add(_key(trial.system_attrs.get("fixed_params", {})))
        elif status == "error":  # an invalid run (e.g. a saturated client): once more
            key = _key(trial.params)
            errors[key] = errors.get(key, 0) + 1
            if errors[key] >= ATTEMPTS:
                final.setdefault(key, trial)
            else:
                cut[key] = dict(trial.params)
        elif status in FINAL:
            final.setdefault(_key(trial.params), trial)
        elif trial.state == TrialState.FAIL and trial.params:
            cut[_key(trial.params)] = dict(trial.params)
    retry = [p for k, p in cut.items() if k not in final and k not in queued]
    return Progress(final, retry, len(queued))


def run_study(
    study: Study,
    record: optuna.Study,
    folder: Path,
    measure: Measure,
    after_each: Callable[[FrozenTrial], None],
) -> None:
    """Measure settings until the study has its size in settings finished for good; the
    settings already measured (a resumed study) are not measured again."""

    def objective(trial: Trial) -> tuple[float, float]:
        params = _suggest(study, trial)
        trial.set_user_attr("status", "running")
        trial_dir = folder / f"trial-{trial.number:03d}"
        try:
            got = measure({**study.fixed, **params}, trial_dir)
        except LaunchFailed as exc:
            trial.set_user_attr("status", "launch_failed")
            trial.set_user_attr("reason", str(exc))
            trial.set_user_attr("log_tail", list(exc.log_tail))
            trial.set_user_attr("run_dir", trial_dir.name)
            raise
        for name, value in got.attrs.items():
            trial.set_user_attr(name, value)
        trial.set_user_attr("verdict", got.verdict)
        # Optuna's constraint (<= 0: feasible): the samplers of a space favour passing settings
        trial.set_constraint("passes_policy", 0.0 if got.verdict == "PASS" else 1.0)
        if got.throughput is None or got.latency is None:
            trial.set_user_attr("status", "error")
            trial.set_user_attr("reason", got.reason or "the setting's run measured nothing")
            raise SettingError(got.reason)
        trial.set_user_attr("throughput", got.throughput)
        trial.set_user_attr("latency", got.latency)
        trial.set_user_attr("status", "measured")
        return got.throughput, got.latency

    def callback(_: optuna.Study, trial: FrozenTrial) -> None:
        after_each(trial)

    for _ in range(2 * study.size + 4):  # bounded: each pass finishes one setting
        state = progress(record)
        if len(state.final) >= study.size:
            return
        for params in state.retry:
            record.enqueue_trial(params, user_attrs={"retry": True})
        record.optimize(objective, n_trials=1, catch=(LaunchFailed, SettingError),
                        callbacks=[callback], gc_after_trial=False)  # fmt: skip


def trials_of(record: optuna.Study) -> list[FrozenTrial]:
    """Every trial that finished a setting (measured, or failed for good), in order."""
    return sorted(progress(record).final.values(), key=lambda t: t.number)
