"""Where to probe next: bracket the capacity (double until a probe fails, halve until one
passes), then close the bracket by interpolation on the binding objective.

A probe "passes" when every critical objective PASSes (within its target: a WARN is a load the
service does not hold). Each probe also reports its pressure, the binding objective's
estimate over its target (1 at the edge): latency grows with load, so the next level is where
the line through the bracket's two pressures crosses 1 (regula falsi), kept at least one
tolerance step inside the bracket so that each probe can close it. Where no pressure is known,
the bracket is halved (geometrically for rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Tried:
    level: float
    passed: bool
    pressure: float | None  # binding objective's estimate / target; None when not known


@dataclass
class Search:
    """The bracket so far and the next level to probe (``None``: done)."""

    start: float
    integer: bool  # concurrency (users) rather than a request rate
    tolerance: float = 0.05
    floor: float = 1.0  # lowest level worth probing (1 user, or the start / 64 for rates)
    ceiling: float = 1e6
    tried: list[Tried] = field(default_factory=list)

    @property
    def lo(self) -> Tried | None:
        """The highest level that passed (below every failure)."""
        hi = self.hi
        passes = [t for t in self.tried if t.passed and (hi is None or t.level < hi.level)]
        return max(passes, key=lambda t: t.level, default=None)

    @property
    def hi(self) -> Tried | None:
        """The lowest level that failed."""
        return min((t for t in self.tried if not t.passed), key=lambda t: t.level, default=None)

    def add(self, level: float, passed: bool, pressure: float | None) -> None:
        self.tried.append(Tried(level, passed, pressure))

    def closed(self) -> bool:
        lo, hi = self.lo, self.hi
        return lo is not None and hi is not None and hi.level - lo.level <= self._step(lo.level)

    def next_level(self) -> float | None:
        lo, hi = self.lo, self.hi
        if not self.tried:
            return self._snap(self.start)
        if hi is None:  # everything passed so far: double
            assert lo is not None
            up = self._snap(min(lo.level * 2, self.ceiling), toward=lo.level)
            return up if up > lo.level else None
        if lo is None:  # everything failed so far: halve
            down = self._snap(max(hi.level / 2, self.floor))
            return down if down < hi.level else None
        if self.closed():
            return None
        step = self._step(lo.level)
        low, high = lo.level + step, hi.level - step
        guess = min(max(self._interpolate(lo, hi), low), high)
        level = self._snap(guess)
        if level > low >= guess:  # rounded past the step that closes the bracket from below
            level = self._snap(guess, toward=lo.level)
        elif level < high <= guess:  # or from above
            level = self._snap(guess, toward=hi.level)
        if not lo.level < level < hi.level:
            return None
        return level

    def _interpolate(self, lo: Tried, hi: Tried) -> float:
        if lo.pressure is not None and hi.pressure is not None and hi.pressure > lo.pressure:
            share = (1.0 - lo.pressure) / (hi.pressure - lo.pressure)
            return lo.level + min(max(share, 0.0), 1.0) * (hi.level - lo.level)
        if self.integer:
            return (lo.level + hi.level) / 2
        return math.sqrt(lo.level * hi.level)

    def _step(self, level: float) -> float:
        """The bracket width that is close enough: a tolerance of the level (a whole user)."""
        width = self.tolerance * level
        return max(1.0, math.floor(width)) if self.integer else width

    def _snap(self, level: float, toward: float | None = None) -> float:
        """A level a person can read: a whole user, or a rate to four significant figures
        (rounded toward ``toward`` when given)."""
        if self.integer:
            return float(max(1, round(level)))
        if level <= 0:
            return level
        unit = 10.0 ** (math.floor(math.log10(level)) - 3)
        if toward is None:
            return round(level / unit) * unit
        rounding = math.floor if toward < level else math.ceil
        return float(rounding(level / unit) * unit)
