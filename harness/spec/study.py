"""The study file of `harness tune`: which vLLM engine settings to vary, how to measure each
(a fixed-load run of a scenario, or a capacity search), and how to start a server with them.

Settings are named as vLLM's engine arguments in snake_case (``max_num_seqs``, so
``--max-num-seqs`` on the command line) or as ``VLLM_*`` environment variables. A grid is
every combination (Optuna's grid sampler); a space is sampled (TPE, NSGA-II or random) for a
given number of trials.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from harness.spec.config import StrictModel, apply_overrides, read_yaml, validate
from harness.spec.launcher import LauncherSpec

#: A setting's value: what a command-line flag or an environment variable can carry.
Scalar = str | bool | int | float
_ENGINE_ARG = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_VAR = re.compile(r"^VLLM_[A-Z0-9_]+$")


def check_setting_name(name: str) -> str:
    """An engine argument in snake_case, or a VLLM_* environment variable."""
    if not (_ENGINE_ARG.match(name) or _ENV_VAR.match(name)):
        raise ValueError(
            f"{name!r}: expected a vLLM engine argument in snake_case (max_num_seqs for "
            "--max-num-seqs) or a VLLM_* environment variable"
        )
    return name


class Range(StrictModel):
    """A numeric range sampled by the study: integers when low and high are integers."""

    low: int | float
    high: int | float
    log: bool = Field(default=False, description="sample on a log scale (low must be > 0)")
    step: int | float | None = Field(default=None, gt=0, description="grid step within range")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be above low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        return self

    @property
    def integer(self) -> bool:
        numbers = (self.low, self.high, self.step if self.step is not None else 1)
        return all(isinstance(v, int) for v in numbers)


Choices = Annotated[list[Scalar], Field(min_length=1)]


class CapacityOptions(StrictModel):
    """The capacity search run per setting when ``measure: capacity``."""

    tolerance: float = Field(default=0.05, gt=0, lt=1, description="bracket width to stop at")
    max_probes: int = Field(default=8, ge=2, le=50, description="probe runs per setting, at most")
    ceiling: float | None = Field(default=None, gt=0, description="highest load worth probing")


class Study(StrictModel):
    """A tuning study, as users write it."""

    schema_version: Literal[1] = Field(default=1, alias="schema", description="file format version")
    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    scenario: str = Field(description="scenario file driving each setting, relative to this file")
    policy: str | None = Field(
        default=None, description="SLO policy file (relative to this file); null: the scenario's"
    )
    measure: Literal["run", "capacity"] = Field(
        default="run",
        description="run: the scenario's fixed load per setting; capacity: a capacity search "
        "per setting (the highest load each holds within the policy)",
    )
    capacity: CapacityOptions = Field(default_factory=CapacityOptions)
    launcher: LauncherSpec
    fixed: dict[str, Scalar] = Field(
        default_factory=dict, description="settings every trial gets, e.g. max_model_len: 4096"
    )
    grid: dict[str, Choices] | None = Field(
        default=None, description="every combination of these values is measured once"
    )
    space: dict[str, Choices | Range] | None = Field(
        default=None, description="values sampled from: a list of choices or {low, high, log}"
    )
    trials: int | None = Field(default=None, ge=1, le=10_000, description="settings to measure")
    sampler: Literal["grid", "tpe", "nsga2", "random"] | None = Field(
        default=None, description="null: grid for a grid, tpe for a space"
    )
    seed: int = Field(default=0, description="seed of the sampler")
    throughput: Literal["output_token_rate", "request_rate", "goodput"] = Field(
        default="output_token_rate", description="the throughput the study maximises"
    )
    latency_objective: str | None = Field(
        default=None,
        description="the policy objective the study minimises beside throughput; null: the "
        "policy's first critical latency objective",
    )

    @field_validator("fixed", "grid", "space")
    @classmethod
    def _setting_names(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for name in value or {}:
            check_setting_name(name)
        return value

    @model_validator(mode="after")
    def _one_search(self) -> Self:
        if (self.grid is None) == (self.space is None):
            raise ValueError("give either grid (every combination) or space (sampled), not both")
        varied = set(self.grid or self.space or {})
        if not varied:
            raise ValueError("grid/space: name at least one setting to vary")
        if both := sorted(varied & set(self.fixed)):
            raise ValueError(f"fixed: {', '.join(both)} also varied in grid/space")
        if self.grid is not None:
            if self.trials is not None:
                raise ValueError("trials: a grid measures every combination once; remove trials")
            if self.sampler not in (None, "grid"):
                raise ValueError(f"sampler {self.sampler!r} samples a space, not a grid")
        else:
            if self.trials is None:
                raise ValueError("trials: required with a space (how many settings to measure)")
            if self.sampler == "grid":
                raise ValueError("sampler grid needs a grid: list values under grid")
        return self

    @property
    def sampler_name(self) -> str:
        return self.sampler or ("grid" if self.grid is not None else "tpe")

    @property
    def size(self) -> int:
        """Settings the study measures in all: the grid's combinations, or the trials."""
        if self.grid is not None:
            return math.prod(len(v) for v in self.grid.values())
        return int(self.trials or 0)


def load_study(path: Path, overrides: list[str] | None = None) -> Study:
    """Read, override (`--set`), and validate a study file; errors name file and key path."""
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides, str(path))
    return validate(Study, data, str(path))


def relative_to_study(study_file: Path, ref: str) -> Path:
    """A file a study names, resolved against the study file's folder."""
    path = Path(ref)
    return path if path.is_absolute() else (study_file.parent / path).resolve()
