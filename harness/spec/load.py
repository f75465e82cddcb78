"""The `load:` section of a scenario: arrival process, stages, and the phases of a run."""

from __future__ import annotations

import math
from typing import Annotated, Literal, NamedTuple

from pydantic import Field, model_validator

from harness.spec.config import StrictModel


class PoissonArrivals(StrictModel):
    """Open loop: requests arrive as a Poisson process whatever the server does."""

    type: Literal["poisson"] = "poisson"
    rate: float = Field(gt=0, le=100_000, description="mean arrivals per second")
    max_concurrency: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="in-flight cap; later arrivals wait (lag recorded)",
    )


class GammaArrivals(StrictModel):
    """Open loop with tunable burstiness, as vLLM's `--burstiness`: gamma inter-arrival gaps
    with shape `burstiness` (1 is Poisson; below 1 burstier, above 1 more regular)."""

    type: Literal["gamma"] = "gamma"
    rate: float = Field(gt=0, le=100_000, description="mean arrivals per second")
    burstiness: float = Field(
        default=1.0, gt=0, le=1000, description="gamma shape; coefficient of variation 1/sqrt(b)"
    )
    max_concurrency: int = Field(default=256, ge=1, le=100_000)


class ClosedLoop(StrictModel):
    """Closed loop: N users, each sending its next request when the last one ends."""

    type: Literal["concurrency"] = "concurrency"
    users: int = Field(ge=1, le=100_000, description="concurrent users")


Arrival = Annotated[PoissonArrivals | GammaArrivals | ClosedLoop, Field(discriminator="type")]
OpenArrival = PoissonArrivals | GammaArrivals


class Stage(StrictModel):
    """A stretch of the run at one load level, or a linear ramp to it from the level before."""

    duration_s: float = Field(gt=0, le=7 * 86_400)
    rate: float | None = Field(default=None, ge=0, le=100_000, description="arrivals/s (open loop)")
    users: int | None = Field(
        default=None, ge=0, le=100_000, description="concurrent users (closed loop)"
    )
    ramp: bool = Field(
        default=False, description="ramp linearly from the previous stage's level (or 0)"
    )


class EarlyStop(StrictModel):
    """Re-judge while the run goes and stop once every critical objective is decided.

    Each look spends an equal share of the policy's error rate (Bonferroni over the planned
    looks), so the decision keeps its confidence however many looks are taken; the final
    verdict is judged at the same per-look confidence.
    """

    every_s: float = Field(default=10.0, gt=0, le=86_400, description="seconds between looks")
    min_s: float = Field(
        default=30.0,
        ge=0,
        le=7 * 86_400,
        description="first look this long after the measured window opens",
    )


class LoadSpec(StrictModel):
    """How hard and how long. Warm-up and cool-down are sent and recorded, not judged."""

    arrival: Arrival
    duration_s: float | None = Field(
        default=None,
        gt=0,
        le=7 * 86_400,
        description="measured window; with stages, defaults to their total less warm-up/cool-down",
    )
    warmup_s: float = Field(
        default=0.0, ge=0, le=86_400, description="first part of the run, not judged"
    )
    cooldown_s: float = Field(
        default=0.0, ge=0, le=86_400, description="last part of the run, not judged"
    )
    stages: list[Stage] | None = Field(
        default=None,
        min_length=1,
        description="load levels over the run (ramp, steps, hold), from its start",
    )
    max_requests: int | None = Field(
        default=None,
        ge=1,
        le=10**9,
        description="stop sending after this many requests (warm-up included)",
    )
    drain_timeout_s: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="after the run, wait this long for in-flight requests",
    )
    early_stop: EarlyStop | None = Field(
        default=None,
        description="stop sending once every critical objective is decided",
    )

    @model_validator(mode="after")
    def _consistent(self) -> LoadSpec:
        if self.stages is None:
            if self.duration_s is None:
                raise ValueError("duration_s is required (or give stages)")
            return self
        open_loop = self.arrival.type != "concurrency"
        key = "rate" if open_loop else "users"
        for i, stage in enumerate(self.stages):
            if (stage.rate if open_loop else stage.users) is None:
                raise ValueError(f"stages[{i}]: a {self.arrival.type} arrival needs `{key}`")
            if (stage.users if open_loop else stage.rate) is not None:
                other = "users" if open_loop else "rate"
                raise ValueError(f"stages[{i}]: `{other}` does not apply to {self.arrival.type}")
        total = sum(s.duration_s for s in self.stages)
        edges = self.warmup_s + self.cooldown_s
        if self.duration_s is None and total <= edges:
            raise ValueError(f"stages last {total:g} s: no time left after warm-up and cool-down")
        if self.duration_s is not None and not math.isclose(total, self.duration_s + edges):
            raise ValueError(
                f"stages last {total:g} s but warmup_s + duration_s + cooldown_s is "
                f"{self.duration_s + edges:g} s: drop duration_s or make them agree"
            )
        return self

    @property
    def total_s(self) -> float:
        """Length of the whole run: warm-up, measured window, cool-down."""
        if self.stages is not None:
            return sum(s.duration_s for s in self.stages)
        assert self.duration_s is not None
        return self.warmup_s + self.duration_s + self.cooldown_s

    @property
    def measured_s(self) -> float:
        """Length of the judged window."""
        return self.total_s - self.warmup_s - self.cooldown_s

    def segments(self) -> list[Segment]:
        """The load level over the run, piecewise linear, from its start (seconds)."""
        arrival = self.arrival
        if self.stages is None:
            level = float(arrival.users if arrival.type == "concurrency" else arrival.rate)
            return [Segment(0.0, self.total_s, level, level)]
        out: list[Segment] = []
        t = 0.0
        previous = 0.0
        for stage in self.stages:
            chosen = stage.users if arrival.type == "concurrency" else stage.rate
            level = float(chosen or 0)
            start_level = previous if stage.ramp else level
            out.append(Segment(t, t + stage.duration_s, start_level, level))
            t += stage.duration_s
            previous = level
        return out


class Segment(NamedTuple):
    """Load level rising or falling linearly from `level0` at `start` to `level1` at `end`."""

    start: float
    end: float
    level0: float
    level1: float

    def at(self, t: float) -> float:
        if self.end <= self.start:
            return self.level1
        return self.level0 + (self.level1 - self.level0) * (t - self.start) / (
            self.end - self.start
        )


def planned_looks(load: LoadSpec) -> int:
    """How many early-stop looks the measured window allows (at least one)."""
    if load.early_stop is None:
        return 1
    span = load.measured_s - load.early_stop.min_s
    return max(1, math.floor(span / load.early_stop.every_s) + 1)
