"""Window deltas from snapshots, and what a window's histogram can say: quantiles as
Prometheus' histogram_quantile computes them, exact shares at bucket bounds, the bucket of a
value; gauge series and counter rates."""

from __future__ import annotations

import bisect
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import histogram_windows

from harness.collectors.families import FAMILIES, Family
from harness.collectors.series import Point
from harness.collectors.snapshot import Snapshot, Values
from harness.collectors.window import HistogramWindow, Window, as_of, series_points, window

VLLM = FAMILIES["vllm"]
INF = math.inf


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile on classic buckets (upper bound, cumulative count),
    from its documented rules: buckets sorted by bound, the last one +Inf (else NaN);
    cumulative counts made monotonic; no observations: NaN; linear interpolation inside the
    bucket holding rank q * count; the lowest bucket starts at 0 (at its bound when that
    bound is <= 0); a rank in the +Inf bucket: the highest finite bound."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -INF
    if q > 1:
        return INF
    ordered = sorted(buckets)
    if not ordered or ordered[-1][0] != INF:
        return math.nan
    fixed: list[tuple[float, float]] = []
    for bound, count in ordered:
        fixed.append((bound, max(count, fixed[-1][1]) if fixed else count))
    if len(fixed) < 2:
        return math.nan
    observations = fixed[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i in range(len(fixed) - 1) if fixed[i][1] >= rank), len(fixed) - 1)
    if b == len(fixed) - 1:
        return fixed[-2][0]
    if b == 0 and fixed[0][0] <= 0:
        return fixed[0][0]
    start, end, count = 0.0, fixed[b][0], fixed[b][1]
    if b > 0:
        start = fixed[b - 1][0]
        count -= fixed[b - 1][1]
        rank -= fixed[b - 1][1]
    return start + (end - start) * (rank / count)


def buckets_of(hist: HistogramWindow) -> list[tuple[float, float]]:
    return [*zip(hist.bounds, hist.cumulative, strict=True), (INF, hist.count)]


# 1 in (0, 0.1], 3 in (0.1, 0.5], 4 in (0.5, 1], 2 above 1 s.
H = HistogramWindow(bounds=(0.1, 0.5, 1.0), cumulative=(1.0, 4.0, 8.0), count=10.0, total=7.0)


# --- quantile ---------------------------------------------------------------------------


def test_reference_on_prometheus_documented_cases() -> None:
    # Pinning the reference itself on hand-computed answers.
    assert histogram_quantile(0.5, buckets_of(H)) == pytest.approx(0.5 + 0.5 * (1 / 4))
    assert histogram_quantile(0.1, buckets_of(H)) == pytest.approx(0.1)
    assert histogram_quantile(0.05, buckets_of(H)) == pytest.approx(0.05)
    assert histogram_quantile(0.95, buckets_of(H)) == 1.0
    assert math.isnan(histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]))
    assert math.isnan(histogram_quantile(0.5, [(INF, 3.0)]))
    assert math.isnan(histogram_quantile(0.5, [(0.1, 3.0)]))


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.05, (0.05, 0.0, 0.1)),  # lowest bucket starts at 0
        (0.1, (0.1, 0.0, 0.1)),  # rank on a bound: the lower bucket, at its bound
        (0.25, (0.1 + 0.4 * 1.5 / 3, 0.1, 0.5)),
        (0.4, (0.5, 0.1, 0.5)),
        (0.5, (0.625, 0.5, 1.0)),
        (0.8, (1.0, 0.5, 1.0)),
        (0.81, (1.0, 1.0, INF)),  # in the +Inf bucket: the highest finite bound
        (0.99, (1.0, 1.0, INF)),
    ],
)
def test_quantile_cases(q: float, expected: tuple[float, float, float]) -> None:
    found = H.quantile(q)
    assert found is not None
    assert found == pytest.approx(expected)
    assert found[0] == pytest.approx(histogram_quantile(q, buckets_of(H)))


def test_quantile_without_observations_is_none() -> None:
    empty = HistogramWindow((0.1, 0.5), (0.0, 0.0), 0.0, 0.0)
    assert empty.quantile(0.5) is None
    assert empty.share_under(0.1) is None
    assert empty.mean is None
    assert math.isnan(histogram_quantile(0.5, buckets_of(empty)))


def test_quantile_skips_empty_buckets() -> None:
    hist = HistogramWindow((0.1, 0.2, 0.4, 0.8), (0.0, 0.0, 5.0, 5.0), 5.0, 1.5)
    assert hist.quantile(0.5) == pytest.approx((0.3, 0.2, 0.4))
    assert hist.quantile(1.0) == pytest.approx((0.4, 0.2, 0.4))
    assert histogram_quantile(0.5, buckets_of(hist)) == pytest.approx(0.3)


def test_quantile_with_every_observation_above_the_last_bound() -> None:
    hist = HistogramWindow((0.1, 0.5), (0.0, 0.0), 3.0, 30.0)
    assert hist.quantile(0.5) == (0.5, 0.5, INF)
    assert histogram_quantile(0.5, buckets_of(hist)) == 0.5


_q = st.floats(min_value=0.0, max_value=1.0, exclude_min=True, allow_subnormal=False)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@settings(max_examples=300, deadline=None)
@given(hist=histogram_windows(), q=_q)
def test_quantile_is_prometheus_histogram_quantile(hist: HistogramWindow, q: float) -> None:
    found = hist.quantile(q)
    reference = histogram_quantile(q, buckets_of(hist))
    if hist.count == 0:
        assert found is None
        assert math.isnan(reference)
        return
    assert found is not None
    estimate, lower, upper = found
    assert _close(estimate, reference), (estimate, reference)
    # The bucket is certain: (lower, upper] is one of the histogram's buckets, holds the
    # estimate, and holds the rank.
    edges = (0.0, *hist.bounds, INF)
    i = edges.index(upper)
    assert edges[i - 1] == lower
    assert lower <= estimate <= upper
    cum = (0.0, *hist.cumulative, hist.count)
    rank = q * hist.count
    assert cum[i - 1] < rank <= cum[i] or (upper == INF and rank > cum[-2])


@settings(max_examples=200, deadline=None)
@given(hist=histogram_windows(min_count=1, monotonic=False), q=_q)
def test_quantile_on_non_monotonic_counts_is_prometheus(hist: HistogramWindow, q: float) -> None:
    found = hist.quantile(q)
    assert found is not None
    assert _close(found[0], histogram_quantile(q, buckets_of(hist)))


@settings(max_examples=200, deadline=None)
@given(hist=histogram_windows(min_count=1), q=_q)
def test_share_under_inverts_quantile(hist: HistogramWindow, q: float) -> None:
    found = hist.quantile(q)
    assert found is not None
    if found[2] == INF:
        return  # above the last bound the share is only bracketed
    share = hist.share_under(found[0])
    assert share is not None
    assert math.isclose(share[0], q, rel_tol=1e-9, abs_tol=1e-9)


# --- share_under ------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "share"), [(0.1, 0.1), (0.5, 0.4), (1.0, 0.8)])
def test_share_under_is_exact_at_bounds(x: float, share: float) -> None:
    assert H.share_under(x) == (share, share, share)


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.05, (0.05, 0.0, 0.1)),
        (0.3, (0.1 + 0.3 * 0.5, 0.1, 0.4)),
        (0.75, (0.6, 0.4, 0.8)),
        (2.0, (0.8, 0.8, 1.0)),  # above the last bound: at least 0.8, at most all
    ],
)
def test_share_under_is_bracketed_between_bounds(
    x: float, expected: tuple[float, float, float]
) -> None:
    assert H.share_under(x) == pytest.approx(expected)


@settings(max_examples=200, deadline=None)
@given(hist=histogram_windows(min_count=1), x=st.integers(1, 200_000).map(lambda v: v / 1000))
def test_share_under_brackets(hist: HistogramWindow, x: float) -> None:
    found = hist.share_under(x)
    assert found is not None
    estimate, lower, upper = found
    assert 0.0 <= lower <= estimate <= upper <= 1.0
    i = bisect.bisect_left(hist.bounds, x)
    if i < len(hist.bounds) and hist.bounds[i] == x:
        assert lower == upper == hist.cumulative[i] / hist.count
    else:
        assert lower == (hist.cumulative[i - 1] / hist.count if i else 0.0)
        assert upper == (hist.cumulative[i] / hist.count if i < len(hist.bounds) else 1.0)


def test_mean_and_json_round_trip() -> None:
    assert H.mean == pytest.approx(0.7)
    assert HistogramWindow.from_json(H.to_json()) == H


# --- window(): deltas between the snapshots as of start and end ----------------------------

_TTFT = "vllm:time_to_first_token_seconds"


def snap(wall: float, ttft_count: float, prompt: float, **extra: dict[str, float]) -> Snapshot:
    """A vLLM snapshot: TTFT buckets (a tenth of requests under 0.1 s, all under 10 s, and
    the bound 2.5 so that bounds sort as numbers), prompt tokens, finish reasons."""
    values: Values = {
        "server.ttft": {
            "le=0.1": ttft_count / 10,
            "le=2.5": ttft_count / 2,
            "le=10.0": ttft_count,
            "le=+Inf": ttft_count,
            "count": ttft_count,
            "sum": ttft_count * 0.8,
        },
        "server.prompt_tokens": {"": prompt},
        "server.requests": {"finished_reason=stop": ttft_count, "finished_reason=length": 1.0},
        "server.queue_waiting": {"": 3.0},
        **extra,
    }
    return Snapshot(wall, values, {m: m for m in values})


SNAPS = [
    snap(100.0, 10.0, 1000.0),
    snap(110.0, 20.0, 1500.0),
    snap(120.0, 50.0, 2500.0),
    snap(130.0, 60.0, 3000.0),
]
COUNTED = [f.metric for f in VLLM if f.type in ("histogram", "counter")]


def test_as_of_is_the_last_snapshot_at_or_before() -> None:
    assert as_of(SNAPS, 99.9) is None
    assert as_of(SNAPS, 100.0) is SNAPS[0]
    assert as_of(SNAPS, 119.99) is SNAPS[1]
    assert as_of(SNAPS, 120.0) is SNAPS[2]
    assert as_of(SNAPS, 1e9) is SNAPS[3]
    assert as_of([], 100.0) is None


def test_window_deltas_use_the_as_of_rule() -> None:
    w = window(SNAPS, VLLM, start=105.0, end=125.0, stale_s=10.0)
    assert (w.start_at, w.end_at) == (100.0, 120.0)
    assert w.seconds == 20.0
    assert w.counters["server.prompt_tokens"] == {"": 1500.0}
    assert w.counters["server.requests"] == {
        "finished_reason=stop": 40.0,
        "finished_reason=length": 0.0,
    }
    assert w.counter_total("server.requests") == 40.0
    assert w.counter_total("server.generation_tokens") is None
    hist = w.histograms["server.ttft"]
    assert hist.bounds == (0.1, 2.5, 10.0)  # numeric order, not "le=10.0" < "le=2.5"
    assert hist.cumulative == (4.0, 20.0, 40.0)
    assert hist.count == 40.0
    assert hist.total == pytest.approx(32.0)
    assert "server.queue_waiting" not in w.missing  # gauges have no delta
    assert "server.queue_waiting" not in w.counters


def test_window_end_on_a_snapshot_uses_it() -> None:
    w = window(SNAPS, VLLM, start=110.0, end=130.0, stale_s=5.0)
    assert (w.start_at, w.end_at) == (110.0, 130.0)
    assert w.counters["server.prompt_tokens"] == {"": 1500.0}


def test_window_start_before_the_first_snapshot_uses_the_first() -> None:
    w = window(SNAPS, VLLM, start=50.0, end=121.0, stale_s=5.0)
    assert (w.start_at, w.end_at) == (100.0, 120.0)
    assert w.counters["server.prompt_tokens"] == {"": 1500.0}
    assert w.histograms["server.ttft"].count == 40.0


def test_window_with_a_stale_end_has_every_family_missing() -> None:
    w = window(SNAPS, VLLM, start=105.0, end=200.0, stale_s=20.0)
    assert w.end_at == 130.0
    assert w.histograms == {}
    assert w.counters == {}
    assert set(w.missing) == set(COUNTED)
    assert all(
        why == "server metrics stop 70.0 s before the window ends" for why in w.missing.values()
    )


def test_window_end_just_inside_stale_s_is_read() -> None:
    w = window(SNAPS, VLLM, start=105.0, end=150.0, stale_s=20.0)
    assert w.end_at == 130.0
    assert w.counters["server.prompt_tokens"] == {"": 2000.0}


def test_window_without_snapshots() -> None:
    w = window([], VLLM, start=100.0, end=200.0, stale_s=5.0)
    assert (w.start_at, w.end_at) == (None, None)
    assert set(w.missing) == set(COUNTED)
    assert set(w.missing.values()) == {"no server metrics were collected"}


def test_window_with_one_snapshot_has_no_delta() -> None:
    w = window(SNAPS[:1], VLLM, start=90.0, end=101.0, stale_s=5.0)
    assert set(w.missing) == set(COUNTED)
    assert set(w.missing.values()) == {"only one server snapshot covers the window"}
    w = window(SNAPS, VLLM, start=121.0, end=125.0, stale_s=5.0)  # both ends as of 120
    assert set(w.missing.values()) == {"only one server snapshot covers the window"}


def test_window_end_before_every_snapshot() -> None:
    w = window(SNAPS, VLLM, start=10.0, end=20.0, stale_s=5.0)
    assert w.end_at is None
    assert set(w.missing) == set(COUNTED)


def test_unsorted_snapshots_are_ordered_by_wall() -> None:
    w = window(list(reversed(SNAPS)), VLLM, start=105.0, end=125.0, stale_s=10.0)
    assert (w.start_at, w.end_at) == (100.0, 120.0)
    assert w.counters["server.prompt_tokens"] == {"": 1500.0}


def test_counter_reset_is_reported_not_negative() -> None:
    restarted = snap(120.0, 50.0, 20.0)  # prompt tokens went 1000 -> 20
    w = window([SNAPS[0], restarted], VLLM, start=100.0, end=120.0, stale_s=5.0)
    assert "server.prompt_tokens" not in w.counters
    assert "restarted" in w.missing["server.prompt_tokens"]
    assert "vllm:prompt_tokens_total went down" in w.missing["server.prompt_tokens"]
    assert w.counters["server.requests"]["finished_reason=stop"] == 40.0


def test_histogram_reset_is_reported() -> None:
    w = window([SNAPS[2], snap(130.0, 5.0, 9000.0)], VLLM, 120.0, 130.0, stale_s=5.0)
    assert "restarted" in w.missing["server.ttft"]
    assert "server.ttft" not in w.histograms
    assert w.counters["server.prompt_tokens"] == {"": 6500.0}


def test_a_by_key_that_disappears_is_a_reset() -> None:
    end = snap(120.0, 50.0, 2500.0)
    del end.values["server.requests"]["finished_reason=length"]
    w = window([SNAPS[0], end], VLLM, 100.0, 120.0, stale_s=5.0)
    assert "restarted" in w.missing["server.requests"]


def test_family_absent_at_end_is_missing_with_its_names() -> None:
    w = window(SNAPS, VLLM, start=105.0, end=125.0, stale_s=10.0)
    assert w.missing["server.itl"] == (
        "the server exposes no vllm:inter_token_latency_seconds or "
        "vllm:time_per_output_token_seconds"
    )
    assert w.missing["server.preemptions"] == "the server exposes no vllm:num_preemptions_total"
    assert set(w.missing) == set(COUNTED) - {
        "server.ttft",
        "server.prompt_tokens",
        "server.requests",
    }


def test_family_absent_at_start_counts_from_zero() -> None:
    first = snap(100.0, 10.0, 1000.0)
    del first.values["server.prompt_tokens"]
    w = window([first, SNAPS[1]], VLLM, 100.0, 110.0, stale_s=5.0)
    assert w.counters["server.prompt_tokens"] == {"": 1500.0}


def test_family_absent_at_end_but_present_at_start_is_missing() -> None:
    last = snap(110.0, 20.0, 1500.0)
    del last.values["server.prompt_tokens"]
    w = window([SNAPS[0], last], VLLM, 100.0, 110.0, stale_s=5.0)
    assert "server.prompt_tokens" not in w.counters
    assert w.missing["server.prompt_tokens"] == "the server exposes no vllm:prompt_tokens_total"


def test_histogram_without_count_falls_back_to_inf_bucket_or_is_missing() -> None:
    def only(wall: float, buckets: dict[str, float]) -> Snapshot:
        return Snapshot(wall, {"server.e2el": buckets})

    a = only(0.0, {"le=1.0": 1.0, "le=+Inf": 2.0})
    b = only(10.0, {"le=1.0": 4.0, "le=+Inf": 6.0})
    w = window([a, b], VLLM, 0.0, 10.0, stale_s=5.0)
    hist = w.histograms["server.e2el"]
    assert (hist.bounds, hist.cumulative, hist.count) == ((1.0,), (3.0,), 4.0)
    assert math.isnan(hist.total)
    a = only(0.0, {"le=1.0": 1.0})
    b = only(10.0, {"le=1.0": 4.0})
    w = window([a, b], VLLM, 0.0, 10.0, stale_s=5.0)
    assert w.missing["server.e2el"] == "vllm:e2e_request_latency_seconds has no buckets"


def test_window_to_json() -> None:
    w = window(SNAPS, VLLM, start=105.0, end=125.0, stale_s=10.0)
    data = w.to_json()
    assert data["start_at"] == 100.0
    assert data["histograms"]["server.ttft"]["count"] == 40.0
    assert (
        HistogramWindow.from_json(data["histograms"]["server.ttft"]) == w.histograms["server.ttft"]
    )
    assert isinstance(w, Window)


# --- series_points ---------------------------------------------------------------------------


def test_series_points_gauges_and_counter_rates() -> None:
    fams: list[Family] = list(VLLM)
    s0 = Snapshot(
        100.0,
        {
            "server.queue_waiting": {"": 2.0},
            "server.prompt_tokens": {"": 100.0},
            "server.kv_cache_usage": {"": 0.5},
        },
    )
    s1 = Snapshot(
        102.0,
        {
            "server.queue_waiting": {"": 5.0},
            "server.prompt_tokens": {"": 300.0},
            "server.requests": {"finished_reason=stop": 4.0},
        },
    )
    s2 = Snapshot(
        106.0,
        {
            "server.prompt_tokens": {"": 20.0},  # restarted: no rate
            "server.requests": {"finished_reason=stop": 6.0, "finished_reason=length": 2.0},
        },
    )
    s3 = Snapshot(107.0, {"server.prompt_tokens": {"": 30.0}})
    points = series_points("scrape", [s2, s0, s3, s1], fams)
    assert points == [
        Point("scrape", "server.queue_waiting", "", 100.0, 2.0),
        Point("scrape", "server.kv_cache_usage", "", 100.0, 0.5),
        Point("scrape", "server.queue_waiting", "", 102.0, 5.0),
        Point("scrape", "server.prompt_tokens.rate", "", 102.0, 100.0),
        Point("scrape", "server.requests.rate", "", 106.0, 1.0),  # (6 + 2 - 4) / 4 s
        Point("scrape", "server.prompt_tokens.rate", "", 107.0, 10.0),
    ]


def test_series_points_keep_per_gpu_keys() -> None:
    key = "Hostname=n,gpu=0,UUID=GPU-1"
    snaps = [
        Snapshot(1.0, {"gpu.utilization": {key: 0.5}}),
        Snapshot(2.0, {"gpu.utilization": {key: 0.75, "gpu=1": 0.1}}),
    ]
    assert series_points("prometheus", snaps, FAMILIES["dcgm"]) == [
        Point("prometheus", "gpu.utilization", key, 1.0, 0.5),
        Point("prometheus", "gpu.utilization", key, 2.0, 0.75),
        Point("prometheus", "gpu.utilization", "gpu=1", 2.0, 0.1),
    ]


def test_series_points_skip_a_repeated_instant() -> None:
    snaps = [
        Snapshot(1.0, {"server.prompt_tokens": {"": 1.0}}),
        Snapshot(1.0, {"server.prompt_tokens": {"": 5.0}}),
    ]
    assert series_points("scrape", snaps, VLLM) == []
    assert series_points("scrape", [], VLLM) == []
