"""SLO policy files (slo/*.yaml): objectives the judge checks a run against."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from harness.spec.config import StrictModel, read_yaml, validate
from harness.spec.metrics import ALIASES, METRICS, SHARE_STAT, MetricDef, check_stat
from harness.spec.quantity import format_quantity, parse_quantity


class Band(StrictModel):
    """A target range, e.g. GPU utilization 60-80 %."""

    min: float = Field(description="lower bound of the target range (base unit)")
    max: float = Field(description="upper bound of the target range (base unit)")


class Objective(StrictModel):
    """One SLO: a metric's statistic compared against a target and an alert threshold."""

    name: str = Field(min_length=1, description="short unique name shown in reports")
    metric: str = Field(description="a metric declared in harness.spec.metrics")
    stat: str = Field(description="p50, p99, p99.9, mean, max, min (distributions) or value")
    target: float | Band = Field(
        description="PASS bound: an upper bound for lower-is-better metrics, a lower bound for "
        "higher-is-better ones, or a {min, max} band"
    )
    alert: float | None = Field(
        default=None, description="FAIL bound beyond the target, in the metric's bad direction"
    )
    critical: bool = Field(default=True, description="critical objectives veto promotion")
    min_samples: int = Field(
        default=1, ge=1, description="fewer samples than this make the objective INCONCLUSIVE"
    )
    window: float | None = Field(
        default=None,
        gt=0,
        description="judge the objective in every window of this length (e.g. 30s) of the "
        "measured period, not once over all of it: it holds only if it holds in each",
    )
    description: str = ""

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        value = ALIASES.get(value, value)
        if value not in METRICS:
            raise ValueError(f"unknown metric; expected one of: {', '.join(sorted(METRICS))}")
        return value

    allowed_increase: float | None = Field(
        default=None,
        ge=0,
        description="canary against baseline: the relative worsening of this metric tolerated "
        "(e.g. 0.1 for 10 %); default 10 %",
    )
    bound: float | None = Field(
        default=None,
        description="with stat share_under: the value the share is counted at or under, "
        "in the metric's unit (e.g. 500ms); target and alert are then shares (e.g. 99%)",
    )

    @property
    def definition(self) -> MetricDef:
        return METRICS[self.metric]

    @property
    def judged(self) -> MetricDef:
        """What the target is compared with: the metric itself, or for share_under the share
        of samples at or under the bound, a ratio whose better side is the metric's good side
        (more requests under a latency bound is better)."""
        metric = self.definition
        if self.stat != SHARE_STAT or self.bound is None:
            return metric
        return replace(
            metric,
            name=f"{metric.name} ≤ {format_quantity(self.bound, metric.unit)}",
            unit="ratio",
            dimension="ratio",
            better="higher" if metric.better == "lower" else "lower",
            kind="scalar",
        )

    @model_validator(mode="before")
    @classmethod
    def _parse_quantities(cls, data: Any) -> Any:
        metric = data.get("metric") if isinstance(data, dict) else None
        if isinstance(metric, str):
            metric = ALIASES.get(metric, metric)
        if not isinstance(metric, str) or metric not in METRICS:
            return data
        dim = METRICS[metric].dimension
        out = dict(data)
        if out.get("bound") is not None:
            out["bound"] = _quantity(out["bound"], dim, "bound")
        if out.get("stat") == SHARE_STAT:
            dim = "ratio"  # target and alert are shares
        if out.get("window") is not None:
            out["window"] = _quantity(out["window"], "seconds", "window")
        for key in ("target", "alert"):
            raw = out.get(key)
            if raw is None:
                continue
            if isinstance(raw, dict) and key == "target":
                band = dict(raw)
                for side in ("min", "max"):
                    if side in band:
                        band[side] = _quantity(band[side], dim, f"target.{side}")
                out[key] = band
            else:
                out[key] = _quantity(raw, dim, key)
        return out

    @model_validator(mode="after")
    def _consistent(self) -> Objective:
        problem = check_stat(self.definition, self.stat)
        if problem:
            raise ValueError(f"stat {self.stat!r}: {problem}")
        if self.window is not None and self.definition.source != "client":
            raise ValueError("window: only client metrics can be judged per window")
        if (self.stat == SHARE_STAT) != (self.bound is not None):
            raise ValueError(f"stat {SHARE_STAT} and bound go together: give both or neither")
        better = self.judged.better
        if isinstance(self.target, Band):
            if self.target.min > self.target.max:
                raise ValueError("target band: min must not exceed max")
            edge = self.target.max if better == "lower" else self.target.min
        else:
            edge = self.target
        if self.alert is not None:
            if better == "lower" and self.alert < edge:
                raise ValueError(
                    f"alert ({self.alert:g}) must not be below the target ({edge:g}): "
                    f"lower is better for {self.metric}"
                )
            if better == "higher" and self.alert > edge:
                raise ValueError(
                    f"alert ({self.alert:g}) must not be above the target ({edge:g}): "
                    f"higher is better for {self.metric}"
                )
        return self


def _quantity(raw: Any, dim: Any, key: str) -> float:
    try:
        return parse_quantity(raw, dim)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


class Policy(StrictModel):
    """A named set of objectives, plus the per-request SLOs that define goodput."""

    schema_version: Literal[1] = Field(default=1, alias="schema", description="file format version")
    name: str = Field(min_length=1)
    description: str = ""
    goodput: dict[str, float] = Field(
        default_factory=dict,
        description="per-request SLOs for goodput, e.g. {ttft: 500ms, e2el: 2s}; "
        "a request counts when it succeeded and meets every one",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.5,
        lt=1.0,
        description="one-sided confidence of every bound the judge decides on: PASS needs the "
        "bound on the good side of the target, FAIL the bound on the bad side of the alert",
    )
    fallback_counts_as_error: bool = Field(
        default=False,
        description="a request a gateway served by a fallback (or by another deployment than "
        "the scenario's target.expect_backend) counts as failed: in error_rate, the canary "
        "comparison, and out of the latencies and goodput",
    )
    objectives: Annotated[list[Objective], Field(min_length=1)]

    @field_validator("goodput", mode="before")
    @classmethod
    def _goodput_quantities(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, float] = {}
        allowed = ("ttft", "tpot", "e2el", "itl")
        for key, raw in value.items():
            if key not in allowed:
                raise ValueError(f"goodput.{key}: expected one of {', '.join(allowed)}")
            out[key] = _quantity(raw, "seconds", f"goodput.{key}")
        return out

    @model_validator(mode="after")
    def _unique_names(self) -> Policy:
        seen: set[str] = set()
        for obj in self.objectives:
            if obj.name in seen:
                raise ValueError(f"objective name {obj.name!r} is used twice")
            seen.add(obj.name)
        return self


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; errors name the file and key path."""
    return validate(Policy, read_yaml(path), str(path))
