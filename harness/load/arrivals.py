"""The schedule's machinery: waking it at each arrival time (`Alarm`, also the closed loop's
look at the load profile), and the request greenlets the open loop's arrivals run on. Both
are per-arrival costs, measured on a 64-stream open loop.

Waking: gevent's `Event.wait(timeout)` ends a timed-out wait by throwing a Timeout into the
waiting greenlet; a bare timer whose callback is the schedule's own switch costs about 55
against 125 µs of CPU a wake-up on this project's machine (most of either is the wake-up
itself). The event cuts the sleep short from its link, without a wait of its own.

Greenlets: one spawned per arrival costs more than its spawn: Python 3.11 gives each greenlet
its own frame stack (a 16 KiB mmap, page faults on first use, a munmap when it dies), gevent
records where it was spawned, and its death runs link callbacks. strace of the open loop
shows the mmap and munmap of every request. A worker that ends its request parks instead,
and the next arrival wakes it: the same greenlet, the same frame stack.

At most `cap` requests are in flight (the scenario's max_concurrency); arrivals beyond it
wait in order, as they would behind a semaphore, and are sent as workers free up.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Group

Job = tuple[int, float]  # (request id, intended send time)


class Alarm:
    """Sleeps the schedule's greenlet to a time (each arrival's, or the closed loop's next
    look at the load profile); a set `stop` event ends the sleep at once. `close()` when the
    schedule is over."""

    def __init__(self, stop: Event) -> None:
        self._stop = stop
        self._hub: Any = gevent.get_hub()
        self._timer: Any = None
        self._sleeper: Any = None  # the greenlet parked in sleep_until, while it is
        stop.rawlink(self._on_stop)

    def sleep_until(self, when: float) -> bool:
        """Wait until monotonic time `when`; True when the stop event is set."""
        if self._stop.is_set():
            return True
        delay = when - time.monotonic()
        if delay > 0:
            timer = self._timer = self._hub.loop.timer(delay)
            self._sleeper = gevent.getcurrent()
            timer.start(self._sleeper.switch)
            try:
                self._hub.switch()
            finally:
                self._sleeper = self._timer = None
                timer.close()
        return bool(self._stop.is_set())

    def _on_stop(self, _event: Event) -> None:
        """Runs in the hub when the stop event is set."""
        sleeper = self._sleeper
        if sleeper is not None:
            self._timer.stop()
            sleeper.switch()

    def close(self) -> None:
        self._stop.unlink(self._on_stop)


class ArrivalWorkers:
    """Runs `run(request_id, intended)` for each submitted arrival on a parked or new worker."""

    def __init__(self, group: Group, cap: int, run: Callable[[int, float], None]) -> None:
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        self._group = group  # every worker is in it: the drain joins and kills them there
        self._cap = cap
        self._run = run
        self._hub: Any = gevent.get_hub()
        self._idle: list[Any] = []  # parked workers; the last parked goes first (warm)
        self._queued: deque[Job] = deque()  # arrivals over the cap, oldest first
        self._live = 0
        self._closed = False

    @property
    def queued(self) -> int:
        """Arrivals still waiting for a free worker."""
        return len(self._queued)

    def submit(self, request_id: int, intended: float) -> None:
        """Start the request now on a free worker, or queue it behind the cap."""
        job = (request_id, intended)
        if self._idle:
            self._hub.loop.run_callback(self._deliver, self._idle.pop(), job)
        elif self._live < self._cap:
            self._live += 1
            self._group.spawn(self._work, job)
        else:
            self._queued.append(job)

    def _deliver(self, worker: Any, job: Job) -> None:
        """Runs in the hub: the parked worker takes the job. One killed since it was picked
        (the run is stopping) leaves it queued: taken by a worker still live, or counted as
        never sent."""
        if worker.dead:
            self._queued.appendleft(job)
        else:
            worker.switch(job)

    def close(self) -> None:
        """No more arrivals: parked workers end now, busy ones after their request (and the
        queued arrivals, which are still sent)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            if not worker.dead:
                self._hub.loop.run_callback(worker.switch, None)

    def _work(self, job: Job | None) -> None:
        try:
            while job is not None:
                self._run(*job)
                job = self._next()
        finally:
            self._live -= 1

    def _next(self) -> Job | None:
        if self._queued:
            return self._queued.popleft()
        if self._closed:
            return None
        me = gevent.getcurrent()
        self._idle.append(me)
        try:
            job: Job | None = self._hub.switch()  # submit() or close() switches back in
        except BaseException:  # killed while parked (a stop): no longer available
            if me in self._idle:
                self._idle.remove(me)
            raise
        return job
