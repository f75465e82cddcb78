"""The simulator's error bursts: errors only inside the burst windows, at the set rate there,
and the same draws whichever faults are on."""

from __future__ import annotations

from harness.sim.faults import FaultInjector
from harness.sim.settings import SimSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def errors_at(injector: FaultInjector, clock: Clock, times: list[float]) -> list[bool]:
    seen = []
    for t in times:
        clock.now = 100.0 + t
        seen.append(injector.draw().error)
    return seen


def test_errors_come_only_in_bursts_after_the_first_period() -> None:
    clock = Clock()
    settings = SimSettings(error_rate=1.0, error_burst_s=2.0, error_burst_every_s=10.0)
    injector = FaultInjector(settings, clock)
    times = [0.5, 1.5, 9.9, 10.0, 11.9, 12.1, 19.9, 20.5, 22.5, 30.0]
    assert errors_at(injector, clock, times) == [
        False, False, False, True, True, False, False, True, False, True]  # fmt: skip


def test_without_a_burst_the_rate_applies_all_the_time() -> None:
    clock = Clock()
    injector = FaultInjector(SimSettings(error_rate=1.0), clock)
    assert all(errors_at(injector, clock, [0.0, 5.0, 15.0]))


def test_a_burst_leaves_the_other_faults_draws_alone() -> None:
    """Every request draws every fault in the same order, bursts or not."""
    plain, clock = FaultInjector(SimSettings(stall_rate=0.5, error_rate=0.3)), Clock()
    bursty = FaultInjector(SimSettings(stall_rate=0.5, error_rate=0.3, error_burst_s=1.0), clock)
    assert [plain.draw().stall for _ in range(200)] == [bursty.draw().stall for _ in range(200)]
