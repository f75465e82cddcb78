"""Runs shaped like real serving, with known true values, for the coverage tests.

A server under load does not give independent samples:

- requests sent close together share its queue, which builds and drains: every request's
  latency carries a common slowness that follows an AR(1) process over the requests in
  sending order (``rho`` between consecutive requests, 0.9 by default: a memory of about 19
  requests);
- the chunks of one request share that request's batch and neighbours: each request has a
  slowness factor of its own that all its ITL gaps carry;
- errors come in bursts: a two-state Markov chain over requests, each error followed by
  another with probability ``burst_stay``.

With ``dependent=False`` every sample is independent with the same marginal distribution, so
the true values are the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import pyarrow as pa
from scipy import stats

# log-scale weights of the common (AR) slowness, the request's own factor, and the noise
TTFT_MU, TTFT_COMMON, TTFT_NOISE = math.log(0.2), 0.5, 0.2
GAP_MU, GAP_COMMON, GAP_REQUEST, GAP_NOISE = math.log(0.02), 0.4, 0.3, 0.3
TTFT_SIGMA = math.hypot(TTFT_COMMON, TTFT_NOISE)
GAP_SIGMA = math.sqrt(GAP_COMMON**2 + GAP_REQUEST**2 + GAP_NOISE**2)


@dataclass(frozen=True)
class Shape:
    requests: int = 2000
    chunks: int = 20
    rate: float = 10.0  # requests sent per second, evenly
    rho: float = 0.9
    error_rate: float = 0.05
    burst_stay: float = 0.8  # P(error | previous request failed): bursts of 5 on average
    dependent: bool = True


def ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    """A stationary AR(1) series with unit variance."""
    shocks = rng.standard_normal(n) * math.sqrt(1.0 - rho * rho)
    shocks[0] = rng.standard_normal()
    out = np.empty(n)
    level = 0.0
    for i in range(n):  # a short Python loop: 2 000 steps
        level = rho * level + shocks[i] if i else shocks[0]
        out[i] = level
    return out


def bursty_errors(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Which requests failed: a Markov chain with the stationary share ``error_rate``."""
    p = shape.error_rate
    enter = p * (1.0 - shape.burst_stay) / (1.0 - p)
    u = rng.random(shape.requests)
    failed = np.zeros(shape.requests, dtype=bool)
    state = bool(rng.random() < p)
    for i in range(shape.requests):
        failed[i] = state
        state = bool(u[i] < (shape.burst_stay if state else enter))
    return failed


def run(rng: np.random.Generator, shape: Shape) -> pa.Table:
    """One run's records (all measured, all streamed), sent evenly from t = 0."""
    n, k = shape.requests, shape.chunks
    if shape.dependent:
        common = ar1(rng, n, shape.rho)
        own = rng.standard_normal(n)
        ttft = np.exp(TTFT_MU + TTFT_COMMON * common + TTFT_NOISE * rng.standard_normal(n))
        log_gap = (GAP_COMMON * common + GAP_REQUEST * own)[:, None] + GAP_NOISE * (
            rng.standard_normal((n, k - 1))
        )
        gaps = np.exp(GAP_MU + log_gap)
        failed = bursty_errors(rng, shape)
    else:
        ttft = np.exp(TTFT_MU + TTFT_SIGMA * rng.standard_normal(n))
        gaps = np.exp(GAP_MU + GAP_SIGMA * rng.standard_normal((n, k - 1)))
        failed = rng.random(n) < shape.error_rate
    t_sent = np.arange(n) / shape.rate
    times = (
        t_sent[:, None]
        + ttft[:, None]
        + np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, axis=1)], axis=1)
    )
    lengths = np.where(failed, 0, k)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = times[~failed].ravel()
    nan = np.full(n, np.nan)
    return pa.table(
        {
            "phase": pa.array(["measure"] * n),
            "stream": np.ones(n, bool),
            "t_intended": t_sent,
            "t_sent": t_sent,
            "t_first": np.where(failed, nan, times[:, 0]),
            "t_last": np.where(failed, nan, times[:, -1]),
            "t_done": np.where(failed, t_sent + 0.01, times[:, -1]),
            "chunk_times": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
            "prompt_tokens": np.full(n, 100.0),
            "output_tokens": np.where(failed, nan, float(k)),
            "error": pa.array([("http_status" if f else None) for f in failed], pa.string()),
        }
    )


@cache
def e2el_quantiles(chunks: int, dependent: bool) -> dict[float, float]:
    """E2EL's true quantiles: no closed form, so 2 million draws of one request each (the
    common slowness is stationary N(0, 1)); a standard error of about 0.1 % at p99."""
    rng = np.random.default_rng(7)
    n = 2_000_000
    common = rng.standard_normal(n)
    own = rng.standard_normal(n)
    if dependent:
        ttft = np.exp(TTFT_MU + TTFT_COMMON * common + TTFT_NOISE * rng.standard_normal(n))
        level = GAP_MU + GAP_COMMON * common + GAP_REQUEST * own
        spread = GAP_NOISE
    else:
        ttft = np.exp(TTFT_MU + TTFT_SIGMA * rng.standard_normal(n))
        level = np.full(n, GAP_MU)
        spread = GAP_SIGMA
    total = np.zeros(n)
    for _ in range(chunks - 1):
        total += np.exp(level + spread * rng.standard_normal(n))
    e2el = ttft + total
    return {q: float(np.quantile(e2el, q)) for q in (0.5, 0.9, 0.99)}


def truth(metric: str, stat: str, shape: Shape) -> float:
    """The true value of a metric's stat under ``shape``."""
    if metric == "error_rate":
        return shape.error_rate
    q = {"p50": 0.5, "p90": 0.9, "p99": 0.99}.get(stat)
    if metric == "ttft":
        if stat == "mean":
            return math.exp(TTFT_MU + TTFT_SIGMA**2 / 2)
        assert q is not None
        return math.exp(TTFT_MU + TTFT_SIGMA * float(stats.norm.ppf(q)))
    if metric == "itl":
        if stat == "mean":
            return math.exp(GAP_MU + GAP_SIGMA**2 / 2)
        assert q is not None
        return math.exp(GAP_MU + GAP_SIGMA * float(stats.norm.ppf(q)))
    assert metric == "e2el"
    assert q is not None
    return e2el_quantiles(shape.chunks, shape.dependent)[q]
