"""Per-request fault decisions, drawn from one seeded generator.

Faults exist so that tests and demos can check how the harness classifies failures.
Every request draws every fault in the same order, so the plan of the n-th request
depends only on the seed and n, whichever faults are enabled.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from harness.sim.settings import SimSettings


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What goes wrong with one request. Rejections happen before any output; the
    mid-response faults act once half of the output tokens are out."""

    rate_limited: bool = False
    error: bool = False
    stall: bool = False
    cut: bool = False
    malformed: bool = False

    @property
    def rejects(self) -> bool:
        return self.rate_limited or self.error

    @property
    def interrupts(self) -> bool:
        """Whether anything happens mid-response."""
        return self.stall or self.cut or self.malformed


NO_FAULT = FaultPlan()


def fault_point(num_output_tokens: int) -> int:
    """Output tokens sent before a mid-response fault: half, so that a one-token
    reply is interrupted before its only token."""
    return num_output_tokens // 2


class FaultInjector:
    """Draws a FaultPlan for each request in arrival order."""

    def __init__(self, settings: SimSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._clock, self._start = clock, clock()
        self._rng = random.Random(f"faults:{settings.seed}")
        self.enabled = any(
            rate > 0
            for rate in (
                settings.rate_limit_rate,
                settings.error_rate,
                settings.stall_rate,
                settings.cut_rate,
                settings.malformed_rate,
            )
        )

    def draw(self) -> FaultPlan:
        if not self.enabled:
            return NO_FAULT
        s, u = self._settings, self._rng.random
        # Draw all five, always, so enabling one fault does not shift the others.
        rate_limited, error = u() < s.rate_limit_rate, u() < s.error_rate and self._in_burst()
        stall, cut, malformed = u() < s.stall_rate, u() < s.cut_rate, u() < s.malformed_rate
        return FaultPlan(rate_limited, error and not rate_limited, stall, cut, malformed)

    def _in_burst(self) -> bool:
        """Errors come in bursts when error_burst_s is set: for error_burst_s seconds out of
        every error_burst_every_s, from the first period's end (a warm-up sees none), as an
        incident would, so the judge sees errors clustered in time, not spread evenly."""
        s = self._settings
        if s.error_burst_s <= 0:
            return True
        since = self._clock() - self._start
        return since >= s.error_burst_every_s and since % s.error_burst_every_s < s.error_burst_s
