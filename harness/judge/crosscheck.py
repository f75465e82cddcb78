"""Client against server: do the two views of the same run tell the same story?

Over the whole run (every request either side saw): the tokens the client received against
the engine's generation counter, the API answers against its HTTP counter, and each client
latency percentile against the server histogram's bucket for the same percentile. The server
times a request from inside, so the client's value may sit above the server's bucket by the
network and HTTP overhead (``LATENCY_SLACK``) but never below it. A disagreement does not fail
a run; it flags it (a PASS becomes WARN) because one of the two measurements is wrong or the
time is spent outside the engine, and the report says which.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.collectors.stored import StoredCollection
from harness.collectors.window import HistogramWindow
from harness.judge.analysis import PERCENTILE_METHOD, chunk_gaps, flat_chunks
from harness.judge.verdict import CheckResult as Check
from harness.spec.quantity import format_quantity

#: Client latency may exceed the server bucket by this much: 10 ms plus 10 % (loopback
#: overhead is ~1 ms; a gateway adds 30-150 ms, which this flags on purpose).
LATENCY_SLACK_S = 0.010
LATENCY_SLACK_REL = 0.10
QUANTILES = (0.5, 0.9, 0.99)
#: (client metric, server histogram) pairs that time the same span of a request.
PAIRS = (
    ("ttft", "server.ttft"),
    ("e2el", "server.e2el"),
    ("itl", "server.itl"),
    ("ttft", "gateway.ttft"),
    ("e2el", "gateway.e2el"),
)


def client_latencies(table: pa.Table) -> dict[str, np.ndarray]:
    """TTFT, E2EL and ITL of every successful streamed request of the run, all phases."""
    ok = pc.and_(pc.is_null(table["error"]), pc.fill_null(table["stream"], False))
    rows = table.filter(ok)
    sent = rows["t_sent"].to_numpy(zero_copy_only=False).astype(float)
    first = pc.fill_null(rows["t_first"], math.nan).to_numpy(zero_copy_only=False).astype(float)
    last = pc.fill_null(rows["t_last"], math.nan).to_numpy(zero_copy_only=False).astype(float)
    gaps, real, _ = chunk_gaps(*flat_chunks(rows))
    out = {"ttft": first - sent, "e2el": last - sent, "itl": gaps[real]}
    return {k: v[np.isfinite(v)] for k, v in out.items()}


def crosscheck(table: pa.Table, collected: StoredCollection) -> list[Check]:
    """Every comparison the two sides' data allow."""
    checks: list[Check] = []
    tol = collected.tolerance
    for family, source in (
        ("server.generation_tokens", "the engine's generation counter"),
        ("gateway.generation_tokens", "the gateway's output-token counter"),
    ):
        server_tokens = collected.run.counter_total(family)
        if server_tokens is None:
            continue
        lengths = pc.cast(pc.list_value_length(table["chunk_times"]), pa.int64())
        client_tokens = float(pc.sum(pc.coalesce(table["output_tokens"], lengths)).as_py() or 0)
        checks.append(_count_check(f"output tokens vs {family.split('.')[0]}", client_tokens,
                                   server_tokens, tol, source))  # fmt: skip
    http = collected.run.counters.get("server.http_requests")
    if http is not None:
        answered = float(pc.sum(pc.is_valid(table["status"]).cast(pa.int64())).as_py() or 0)
        checks.append(_count_check("requests vs server", answered, sum(http.values()), tol,
                                   "the server's HTTP counter"))  # fmt: skip
    latencies = client_latencies(table) if table.num_rows else {}
    for client_metric, server_metric in PAIRS:
        hist = collected.run.histograms.get(server_metric)
        values = latencies.get(client_metric)
        if hist is None or values is None:
            continue
        checks.append(_latency_check(client_metric, server_metric, values, hist))
    return checks


def _count_check(what: str, client: float, server: float, tol: float, source: str) -> Check:
    gap = abs(client - server)
    ok = gap <= max(2.0, tol * max(client, server))
    rel = gap / server if server > 0 else math.inf if gap else 0.0
    detail = (
        f"client {client:.0f} vs {source} {server:.0f} "
        f"({'+' if client >= server else '-'}{rel * 100:.2g} %, tolerance {tol * 100:.2g} %)"
    )
    if not ok:
        detail += ": other traffic on the server, or requests the client did not account for"
    return Check(what, ok, detail)


def _latency_check(
    client_metric: str, server_metric: str, values: np.ndarray, hist: HistogramWindow
) -> Check:
    name = f"{client_metric} vs {server_metric}"
    if values.size == 0 or hist.count <= 0:
        return Check(name, None, "no data on one side")
    parts: list[str] = []
    ok = True
    for q in QUANTILES:
        found = hist.quantile(q)
        assert found is not None
        _, lo, hi = found
        c = float(np.percentile(values, q * 100, method=PERCENTILE_METHOD))
        slack = LATENCY_SLACK_S + LATENCY_SLACK_REL * (hi if math.isfinite(hi) else c)
        label = f"p{q * 100:g} client {_s(c)} in server bucket {_s(lo)}–{_s(hi)}"
        if c < lo - slack:
            ok = False
            parts.append(label + ": client faster than the server (a clock or metric is wrong)")
        elif c > hi + slack:
            ok = False
            parts.append(label + ": time spent outside the server (network, gateway, client)")
        else:
            parts.append(label)
    return Check(name, ok, "; ".join(parts))


def _s(value: float) -> str:
    return format_quantity(value, "s")
