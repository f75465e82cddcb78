"""The capacity search's bracket: it ends with the capacity between the highest load held and
the lowest not held, within the tolerance, in few probes, whatever the start, with or without
a pressure to interpolate on, and for rates and whole users alike."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.capacity.search import Search


def run(search: Search, capacity: float, pressure: bool = True, noise: float = 0.0,
        seed: int = 0) -> int:  # fmt: skip
    """Probe until the search stops; a level is held when at or below the capacity."""
    probes = 0
    wobble = 1.0
    while (level := search.next_level()) is not None:
        probes += 1
        assert probes < 60, search.tried
        if noise:
            wobble = 1.0 + noise * math.sin(seed + probes * 1.7)
        held = level <= capacity
        search.add(level, held, level / capacity * wobble if pressure else None)
    return probes


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.floats(1.5, 5000.0),
    start=st.floats(0.02, 50.0),
    pressure=st.booleans(),
)
def test_rates_end_bracketed_within_the_tolerance(
    capacity: float, start: float, pressure: bool
) -> None:
    search = Search(start=capacity * start, integer=False, floor=capacity * start / 1e4)
    probes = run(search, capacity, pressure)
    lo, hi = search.lo, search.hi
    assert lo is not None
    assert hi is not None
    assert lo.level <= capacity < hi.level
    assert hi.level - lo.level <= 0.05 * lo.level * (1 + 1e-9)
    # doubling or halving to the bracket, then interpolation (or halving without pressure)
    bracket = math.ceil(abs(math.log2(start))) + 1
    assert probes <= bracket + (4 if pressure else 9)


@settings(max_examples=300, deadline=None)
@given(capacity=st.floats(1.0, 400.0), start=st.integers(1, 200), pressure=st.booleans())
def test_users_end_on_whole_numbers_within_the_tolerance(
    capacity: float, start: int, pressure: bool
) -> None:
    search = Search(start=float(start), integer=True)
    run(search, capacity, pressure)
    lo, hi = search.lo, search.hi
    assert lo is not None
    assert hi is not None
    assert lo.level <= capacity < hi.level
    assert lo.level == int(lo.level)
    assert hi.level - lo.level <= max(1, math.floor(0.05 * lo.level))


@settings(max_examples=200, deadline=None)
@given(capacity=st.floats(2.0, 500.0), seed=st.integers(0, 1000))
def test_a_noisy_pressure_still_closes_on_the_right_bracket(capacity: float, seed: int) -> None:
    """The pressure only guides where to probe; held or not decides the bracket."""
    search = Search(start=capacity / 3, integer=False, floor=capacity / 1000)
    run(search, capacity, noise=0.2, seed=seed)
    lo, hi = search.lo, search.hi
    assert lo is not None
    assert hi is not None
    assert lo.level <= capacity < hi.level


def test_the_linear_case_closes_in_a_few_probes() -> None:
    """E2EL grows in proportion to the users once the batch is full: from 8 users, 8, 16 and
    32 bracket a capacity of 20.5, and interpolation lands next to it."""
    search = Search(start=8, integer=True)
    levels = []
    while (level := search.next_level()) is not None:
        levels.append(level)
        search.add(level, level <= 20.5, max(0.7, level / 20.5))
    assert levels[:3] == [8, 16, 32]
    assert len(levels) <= 6
    assert (search.lo.level, search.hi.level) == (20, 21)  # type: ignore[union-attr]


def test_nothing_held_stops_at_the_floor_and_everything_held_at_the_ceiling() -> None:
    low = Search(start=8, integer=True)
    run(low, capacity=0.5)
    assert low.lo is None
    assert low.hi is not None
    assert low.hi.level == 1
    high = Search(start=8, integer=True, ceiling=100)
    run(high, capacity=1e9)
    assert high.hi is None
    assert high.lo is not None
    assert high.lo.level == 100
