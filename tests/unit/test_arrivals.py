"""The schedule's alarm and the open loop's request greenlets, on a real gevent loop."""

from __future__ import annotations

import time

import gevent
import pytest
from gevent.event import Event
from gevent.pool import Group

from harness.load.arrivals import Alarm, ArrivalWorkers


def test_the_alarm_wakes_at_the_time_asked_not_before() -> None:
    stop = Event()
    alarm = Alarm(stop)
    woke: list[float] = []

    def schedule() -> None:
        start = time.monotonic()
        for k in range(1, 6):
            assert not alarm.sleep_until(start + 0.01 * k)
            woke.append(time.monotonic() - (start + 0.01 * k))

    gevent.spawn(schedule).get(timeout=5)
    alarm.close()
    # libev's clock is the loop turn's: a timer may fire up to a turn early, never much.
    assert all(-0.002 < lag < 0.5 for lag in woke), woke


def test_a_stop_ends_a_long_sleep_at_once_and_every_sleep_after() -> None:
    stop = Event()
    alarm = Alarm(stop)
    gevent.spawn_later(0.05, stop.set)
    sleeper = gevent.spawn(alarm.sleep_until, time.monotonic() + 30)
    assert sleeper.get(timeout=5) is True  # would block 30 s if the stop did not cut it
    assert alarm.sleep_until(time.monotonic() + 30) is True  # set: no sleep at all
    alarm.close()


def test_a_past_time_does_not_sleep_and_a_closed_alarm_ignores_the_stop() -> None:
    stop = Event()
    alarm = Alarm(stop)
    assert alarm.sleep_until(time.monotonic() - 1) is False
    assert stop.linkcount() == 1
    alarm.close()
    assert stop.linkcount() == 0  # a alarm left behind is not woken by a later stop


def run_workers(cap: int, arrivals: int, hold_s: float) -> tuple[list[int], dict[int, int], int]:
    """Submit `arrivals` jobs at once, each holding its worker hold_s; the order they ran in,
    which greenlet ran each, and the most running at once."""
    group = Group()
    order: list[int] = []
    ran_on: dict[int, int] = {}
    running = [0, 0]  # now, peak

    def job(request_id: int, intended: float) -> None:
        del intended
        order.append(request_id)
        ran_on[request_id] = id(gevent.getcurrent())
        running[0] += 1
        running[1] = max(running)
        gevent.sleep(hold_s)
        running[0] -= 1

    workers = ArrivalWorkers(group, cap, job)
    for k in range(arrivals):
        workers.submit(k, 0.0)
    assert workers.queued == max(0, arrivals - cap)
    workers.close()
    group.join(timeout=10)
    assert len(group) == 0  # every worker ended once the queue was empty
    return order, ran_on, running[1]


def test_workers_are_capped_and_arrivals_over_the_cap_go_in_order() -> None:
    order, ran_on, peak = run_workers(cap=3, arrivals=10, hold_s=0.01)
    assert order == list(range(10))
    assert peak == 3
    assert len(set(ran_on.values())) == 3  # the queued arrivals ran on the same three


def test_a_worker_that_is_free_takes_the_next_arrival() -> None:
    group = Group()
    ran_on: list[int] = []
    workers = ArrivalWorkers(group, 8, lambda rid, t: ran_on.append(id(gevent.getcurrent())))

    def schedule() -> None:
        for k in range(5):
            workers.submit(k, 0.0)
            gevent.sleep(0.005)  # each request ends before the next arrival
        workers.close()

    gevent.spawn(schedule).get(timeout=5)
    group.join(timeout=5)
    assert len(ran_on) == 5
    assert len(set(ran_on)) == 1  # one greenlet, parked between arrivals
    assert len(group) == 0


def test_killing_the_group_ends_parked_and_busy_workers() -> None:
    group = Group()
    started = Event()

    def job(request_id: int, intended: float) -> None:
        del intended
        if request_id == 1:
            started.set()
            gevent.sleep(30)  # busy when killed

    workers = ArrivalWorkers(group, 4, job)
    workers.submit(0, 0.0)
    gevent.sleep(0.01)  # worker 0 is parked now
    workers.submit(1, 0.0)  # takes the parked worker
    workers.submit(2, 0.0)  # a new one, parked after
    started.wait(timeout=5)
    gevent.sleep(0.01)
    assert len(group) == 2
    group.kill(block=True, timeout=5)
    assert len(group) == 0
    workers.submit(3, 0.0)  # the killed ones are no longer offered work: a fresh worker
    workers.close()
    group.join(timeout=5)
    assert len(group) == 0


def test_a_job_for_a_worker_killed_after_it_was_picked_stays_queued() -> None:
    group = Group()
    workers = ArrivalWorkers(group, 2, lambda rid, t: None)
    workers.submit(0, 0.0)
    gevent.sleep(0.01)  # parked
    (parked,) = list(group)
    group.kill(block=True, timeout=5)  # the stop's kill, before the hand-over ran
    workers._deliver(parked, (1, 0.0))
    assert workers.queued == 1  # not lost: counted as never sent if no worker takes it
    workers.close()


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="cap must be at least 1"):
        ArrivalWorkers(Group(), 0, lambda rid, t: None)
