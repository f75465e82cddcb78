"""Runs the scheduler in real time on the event loop and hands tokens to responses.

One callback chain drives every sequence: at each step's deadline it delivers the
previous step's tokens, computes the next step and sets the next deadline to this
deadline plus the step's duration. Deadlines are absolute, so a late wake-up shortens
the next wait instead of shifting all later tokens. ``epoll_wait`` rounds timeouts up
to whole milliseconds, so the loop is asked to wake a little early and the rest is
slept with ``time.sleep`` (sub-millisecond, and at most about a millisecond of loop
time per step). When there is no work the chain stops; the next request starts a step
at once.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from dataclasses import dataclass

from harness.sim.metrics import RequestTimes, SimMetrics
from harness.sim.scheduler import FinishReason, Scheduler, StepResult
from harness.sim.settings import SimSettings
from harness.sim.streams import TokenSink

WAKE_EARLY_S = 0.0012
"""How long before a deadline the loop wakes: one epoll tick plus some slack."""


@dataclass(slots=True, eq=False)
class LiveRequest:
    """A request the engine is working on, with its server-side timestamps."""

    seq_id: int
    sink: TokenSink
    prompt_tokens: int
    max_tokens: int
    stop_after: int | None
    arrival: float
    scheduled: float | None = None
    first_token: float | None = None
    last_token: float = 0.0
    num_generated: int = 0


class Engine:
    """The simulated vLLM engine core of one server."""

    def __init__(
        self,
        settings: SimSettings,
        metrics: SimMetrics,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._loop = loop
        self._scheduler = Scheduler(settings)
        self._live: dict[int, LiveRequest] = {}
        self._ids = itertools.count()
        self._eos_rng = random.Random(f"eos:{settings.seed}")
        self._pending: StepResult | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._closed = False

    def draw_stop(self, max_tokens: int, ignore_eos: bool) -> int | None:
        """Output tokens before the request samples EOS, when that comes before
        ``max_tokens``: geometric with the per-token EOS probability."""
        p = self._settings.eos_probability
        if ignore_eos or p <= 0:
            return None
        if p >= 1:
            return 1 if max_tokens > 1 else None
        u = 1.0 - self._eos_rng.random()  # in (0, 1]
        n = int(math.log(u) / math.log1p(-p)) + 1
        return n if n < max_tokens else None

    def submit(
        self,
        prompt_tokens: int,
        max_tokens: int,
        stop_after: int | None,
        sink: TokenSink,
        arrival: float,
    ) -> int:
        """Register a request that arrived at ``arrival`` (loop time) and return its id.
        It reaches the scheduler after ``extra_ttft_s`` (a slow front end), at once by
        default."""
        seq_id = next(self._ids)
        self._live[seq_id] = LiveRequest(
            seq_id, sink, prompt_tokens, max_tokens, stop_after, arrival
        )
        delay = self._settings.extra_ttft_s
        if delay > 0:
            self._loop.call_later(delay, self._enqueue, seq_id)
        else:
            self._enqueue(seq_id)
        return seq_id

    def abort(self, seq_id: int) -> None:
        """Drop a request (the handler is going away); a no-op once it finished."""
        live = self._live.pop(seq_id, None)
        if live is None:
            return
        self._scheduler.abort(seq_id)
        self._metrics.request_success[FinishReason.ABORT].inc()
        live.sink.abort()

    def close(self) -> None:
        """Stop stepping and abort everything in flight."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for seq_id in list(self._live):
            self.abort(seq_id)

    def _enqueue(self, seq_id: int) -> None:
        live = self._live.get(seq_id)
        if live is None or self._closed:
            return
        self._scheduler.add(seq_id, live.prompt_tokens, live.max_tokens, live.stop_after)
        self._metrics.num_waiting.set(self._scheduler.num_waiting)
        if self._timer is None:
            self._deadline = self._loop.time()
            self._timer = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._timer = None
        now = self._loop.time()
        if now < self._deadline:
            time.sleep(self._deadline - now)
            now = self._loop.time()
        metrics = self._metrics
        metrics.step_lag.observe(now - self._deadline)
        if self._pending is not None:
            self._deliver(self._pending, now)
            self._pending = None
        scheduler = self._scheduler
        if scheduler.has_work and not self._closed:
            result = scheduler.step()
            self._pending = result
            for seq_id in result.scheduled:
                live = self._live.get(seq_id)
                if live is not None and live.scheduled is None:
                    live.scheduled = now
            if result.preempted:
                metrics.preemptions.inc(len(result.preempted))
            self._deadline += result.duration_s
            self._timer = self._loop.call_at(self._deadline - WAKE_EARLY_S, self._tick)
        metrics.num_running.set(scheduler.num_running)
        metrics.num_waiting.set(scheduler.num_waiting)
        metrics.kv_cache_usage.set(scheduler.kv_cache_usage)

    def _deliver(self, result: StepResult, now: float) -> None:
        """Hand each token of a finished step to its response, recording latencies."""
        metrics, live_requests = self._metrics, self._live
        itl = metrics.itl
        generated = 0
        for token in result.tokens:
            live = live_requests.get(token.seq_id)
            if live is None:
                continue  # aborted while the step ran
            generated += 1
            if live.first_token is None:
                live.first_token = now
                metrics.prompt_tokens.inc(live.prompt_tokens)
            else:
                itl.observe(now - live.last_token)
            live.last_token = now
            live.num_generated = token.position + 1
            if not live.sink.deliver(token, now):
                self.abort(token.seq_id)
            elif token.finish_reason is not None:
                del live_requests[token.seq_id]
                self._record_finished(live, token.finish_reason, now)
        if generated:
            metrics.generation_tokens.inc(generated)

    def _record_finished(self, live: LiveRequest, reason: FinishReason, now: float) -> None:
        assert live.scheduled is not None
        assert live.first_token is not None
        times = RequestTimes(live.arrival, live.scheduled, live.first_token, live.last_token)
        self._metrics.observe_finished(
            times, now, live.prompt_tokens, live.num_generated, reason.value
        )
