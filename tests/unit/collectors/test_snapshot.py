"""A /metrics page or a Prometheus matrix turned into a ``Snapshot``: summing pods, max of the
KV cache, deprecated names, ``by`` labels, handler regexes, selectors, NaN, ``le`` spellings
and DCGM's per-GPU series in base units. Both paths must give the same values."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

from harness.collectors.families import FAMILIES, MIB, ServerKind, detect_kind
from harness.collectors.snapshot import (
    Sample,
    Snapshot,
    parse_exposition,
    snapshot_from_samples,
    snapshots_from_matrix,
)

METRICS_DIR = Path(__file__).resolve().parents[2] / "data" / "metrics"
VLLM = FAMILIES["vllm"]
DCGM = FAMILIES["dcgm"]
# The pods of one deployment. http_requests_total carries no model_name label (it comes from
# the web framework, not the engine), so model_name is not part of it: see
# test_a_model_name_selector_keeps_http_requests.
SELECTOR = {"namespace": "prod", "pod": "=~llama-predictor-.*"}


# Two selected pods (a, b), one pod of another namespace and one whose name only contains the
# selector's regex: the last two must never be counted when the selector is given. Pod b
# writes the bound 1 as "1" where pod a writes "1.0".
_A = 'engine="0",model_name="llama-3-8b",namespace="prod",pod="llama-predictor-a"'
_B = 'engine="0",model_name="llama-3-8b",namespace="prod",pod="llama-predictor-b"'
_STAGING = 'engine="0",model_name="llama-3-8b",namespace="staging",pod="llama-predictor-c"'
_NOT_ANCHORED = 'engine="0",model_name="llama-3-8b",namespace="prod",pod="xllama-predictor-z"'

VLLM_PAGE = f"""\
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{{{_A},le="0.1"}} 2.0
vllm:time_to_first_token_seconds_bucket{{{_A},le="0.5"}} 5.0
vllm:time_to_first_token_seconds_bucket{{{_A},le="1.0"}} 7.0
vllm:time_to_first_token_seconds_bucket{{{_A},le="+Inf"}} 8.0
vllm:time_to_first_token_seconds_count{{{_A}}} 8.0
vllm:time_to_first_token_seconds_sum{{{_A}}} 3.25
vllm:time_to_first_token_seconds_bucket{{{_B},le="0.1"}} 1.0
vllm:time_to_first_token_seconds_bucket{{{_B},le="0.5"}} 1.0
vllm:time_to_first_token_seconds_bucket{{{_B},le="1"}} 4.0
vllm:time_to_first_token_seconds_bucket{{{_B},le="+Inf"}} 4.0
vllm:time_to_first_token_seconds_count{{{_B}}} 4.0
vllm:time_to_first_token_seconds_sum{{{_B}}} 2.5
vllm:time_to_first_token_seconds_bucket{{{_STAGING},le="0.1"}} 100.0
vllm:time_to_first_token_seconds_bucket{{{_STAGING},le="0.5"}} 100.0
vllm:time_to_first_token_seconds_bucket{{{_STAGING},le="1.0"}} 100.0
vllm:time_to_first_token_seconds_bucket{{{_STAGING},le="+Inf"}} 100.0
vllm:time_to_first_token_seconds_count{{{_STAGING}}} 100.0
vllm:time_to_first_token_seconds_sum{{{_STAGING}}} 5.0
# HELP vllm:time_to_first_token_seconds_created Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds_created gauge
vllm:time_to_first_token_seconds_created{{{_A}}} 1.7e+09
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{{_A}}} 4.0
vllm:num_requests_running{{{_B}}} 6.0
vllm:num_requests_running{{{_NOT_ANCHORED}}} 40.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{{_A}}} 2.0
vllm:num_requests_waiting{{{_B}}} 3.0
vllm:num_requests_waiting{{{_STAGING}}} 50.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{{_A}}} 0.42
vllm:kv_cache_usage_perc{{{_B}}} 0.87
vllm:kv_cache_usage_perc{{{_STAGING}}} 0.99
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{{{_A}}} 1200.0
vllm:prompt_tokens_total{{{_B}}} 800.0
vllm:prompt_tokens_total{{{_STAGING}}} 99999.0
vllm:prompt_tokens_created{{{_A}}} 1.7e+09
vllm:prompt_tokens_created{{{_B}}} 1.7e+09
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{{{_A},finished_reason="stop"}} 5.0
vllm:request_success_total{{{_A},finished_reason="length"}} 3.0
vllm:request_success_total{{{_B},finished_reason="stop"}} 2.0
vllm:request_success_total{{{_B},finished_reason="length"}} 1.0
vllm:request_success_total{{{_B},finished_reason="abort"}} 1.0
vllm:request_success_total{{{_STAGING},finished_reason="stop"}} 70.0
# HELP http_requests_total Total number of requests by method, status and handler.
# TYPE http_requests_total counter
http_requests_total{{handler="/v1/chat/completions",method="POST",namespace="prod",pod="llama-predictor-a",status="2xx"}} 6.0
http_requests_total{{handler="/v1/chat/completions",method="POST",namespace="prod",pod="llama-predictor-a",status="4xx"}} 1.0
http_requests_total{{handler="/v1/completions",method="POST",namespace="prod",pod="llama-predictor-a",status="2xx"}} 2.0
http_requests_total{{handler="/v1/models",method="GET",namespace="prod",pod="llama-predictor-a",status="2xx"}} 9.0
http_requests_total{{handler="/metrics",method="GET",namespace="prod",pod="llama-predictor-a",status="2xx"}} 100.0
http_requests_total{{handler="/health",method="GET",namespace="prod",pod="llama-predictor-a",status="2xx"}} 50.0
http_requests_total{{handler="/v2/v1/completions",method="POST",namespace="prod",pod="llama-predictor-a",status="2xx"}} 30.0
http_requests_total{{handler="/v1/chat/completions/x",method="POST",namespace="prod",pod="llama-predictor-a",status="2xx"}} 30.0
http_requests_total{{handler="/v1/chat/completions",method="POST",namespace="prod",pod="llama-predictor-b",status="2xx"}} 4.0
http_requests_total{{handler="/v1/chat/completions",method="POST",namespace="prod",pod="llama-predictor-b",status="5xx"}} 1.0
"""  # noqa: E501

# What family_query would return from Prometheus for VLLM_PAGE under SELECTOR, written out by
# hand: one instant of a range query. Prometheus 2.x keeps le="1" and le="1.0" apart.
T0 = 1_700_000_000.0


def _series(labels: dict[str, str], *values: tuple[float, str]) -> dict[str, Any]:
    return {"metric": labels, "values": [[t, v] for t, v in values]}


_TTFT = "vllm:time_to_first_token_seconds"
VLLM_MATRIX: dict[str, list[dict[str, Any]]] = {
    "server.ttft": [
        _series({"__name__": f"{_TTFT}_bucket", "le": "0.1"}, (T0, "3")),
        _series({"__name__": f"{_TTFT}_bucket", "le": "0.5"}, (T0, "6")),
        _series({"__name__": f"{_TTFT}_bucket", "le": "1.0"}, (T0, "7")),
        _series({"__name__": f"{_TTFT}_bucket", "le": "1"}, (T0, "4")),
        _series({"__name__": f"{_TTFT}_bucket", "le": "+Inf"}, (T0, "12")),
        _series({"__name__": f"{_TTFT}_count"}, (T0, "12")),
        _series({"__name__": f"{_TTFT}_sum"}, (T0, "5.75")),
    ],
    "server.requests_running": [_series({"__name__": "vllm:num_requests_running"}, (T0, "10"))],
    "server.queue_waiting": [_series({"__name__": "vllm:num_requests_waiting"}, (T0, "5"))],
    "server.kv_cache_usage": [_series({"__name__": "vllm:kv_cache_usage_perc"}, (T0, "0.87"))],
    "server.prompt_tokens": [_series({"__name__": "vllm:prompt_tokens_total"}, (T0, "2000"))],
    "server.requests": [
        _series({"__name__": "vllm:request_success_total", "finished_reason": "stop"}, (T0, "7")),
        _series({"__name__": "vllm:request_success_total", "finished_reason": "length"}, (T0, "4")),
        _series({"__name__": "vllm:request_success_total", "finished_reason": "abort"}, (T0, "1")),
    ],
    "server.http_requests": [
        _series({"__name__": "http_requests_total", "status": "2xx"}, (T0, "12")),
        _series({"__name__": "http_requests_total", "status": "4xx"}, (T0, "1")),
        _series({"__name__": "http_requests_total", "status": "5xx"}, (T0, "1")),
    ],
}

_GPU0 = (
    'gpu="0",UUID="GPU-0a1b2c3d",pci_bus_id="00000000:18:00.0",device="nvidia0",'
    'modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15",'
    'container="kserve-container",namespace="prod",pod="llama-predictor-a"'
)
_GPU1 = (
    'gpu="1",UUID="GPU-4e5f6a7b",pci_bus_id="00000000:2A:00.0",device="nvidia1",'
    'modelName="NVIDIA H100 80GB HBM3",Hostname="node-1",DCGM_FI_DRIVER_VERSION="550.54.15",'
    'container="kserve-container",namespace="prod",pod="llama-predictor-b"'
)
DCGM_PAGE = f"""\
# HELP DCGM_FI_DEV_SM_CLOCK SM clock frequency (in MHz).
# TYPE DCGM_FI_DEV_SM_CLOCK gauge
DCGM_FI_DEV_SM_CLOCK{{{_GPU0}}} 1980
DCGM_FI_DEV_SM_CLOCK{{{_GPU1}}} 345
# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{{{_GPU0}}} 66
DCGM_FI_DEV_GPU_TEMP{{{_GPU1}}} 41
# HELP DCGM_FI_DEV_POWER_USAGE Power draw (in W).
# TYPE DCGM_FI_DEV_POWER_USAGE gauge
DCGM_FI_DEV_POWER_USAGE{{{_GPU0}}} 612.5
DCGM_FI_DEV_POWER_USAGE{{{_GPU1}}} 80.25
# HELP DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION Total energy consumption since boot (in mJ).
# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{_GPU0}}} 123456789
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{_GPU1}}} 2000
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{{{_GPU0}}} 87
DCGM_FI_DEV_GPU_UTIL{{{_GPU1}}} 12
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{{{_GPU0}}} 40960
DCGM_FI_DEV_FB_USED{{{_GPU1}}} 0
# HELP DCGM_FI_PROF_PIPE_TENSOR_ACTIVE Ratio of cycles the tensor (HMMA) pipe is active.
# TYPE DCGM_FI_PROF_PIPE_TENSOR_ACTIVE gauge
DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{_GPU0}}} 0.512
DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{{{_GPU1}}} 0.000000
"""

KEY0 = "Hostname=node-1,gpu=0,UUID=GPU-0a1b2c3d"
KEY1 = "Hostname=node-1,gpu=1,UUID=GPU-4e5f6a7b"


def page(text: str, selector: dict[str, str] | None = None, kind: ServerKind = "vllm") -> Snapshot:
    return snapshot_from_samples(T0, parse_exposition(text), FAMILIES[kind], selector)


# --- parse_exposition ------------------------------------------------------------------


def test_parse_exposition_keeps_names_labels_and_values() -> None:
    samples = parse_exposition(VLLM_PAGE)
    assert ("vllm:num_requests_waiting", {**_labels(_A)}, 2.0) in samples
    buckets = [s for s in samples if s[0] == f"{_TTFT}_bucket"]
    assert len(buckets) == 12
    assert {s[1]["le"] for s in buckets} == {"0.1", "0.5", "1.0", "1", "+Inf"}
    assert all(isinstance(v, float) for _, _, v in samples)


def test_parse_exposition_rejects_a_page_that_is_not_exposition_text() -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        parse_exposition("<html><body>Sign in</body></html>\n")


def _labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


# --- combining series -----------------------------------------------------------------


def test_two_pods_are_summed_for_counters_gauges_and_buckets() -> None:
    snap = page(VLLM_PAGE, SELECTOR)
    assert snap.wall == T0
    assert snap.values["server.prompt_tokens"] == {"": 2000.0}
    assert snap.values["server.queue_waiting"] == {"": 5.0}
    assert snap.values["server.requests_running"] == {"": 10.0}
    assert snap.values["server.ttft"] == {
        "le=0.1": 3.0,
        "le=0.5": 6.0,
        "le=1.0": 11.0,  # "1.0" of pod a and "1" of pod b are one bucket
        "le=+Inf": 12.0,
        "count": 12.0,
        "sum": 5.75,
    }


def test_without_a_selector_every_series_counts() -> None:
    snap = page(VLLM_PAGE)
    assert snap.values["server.prompt_tokens"] == {"": 2000.0 + 99999.0}
    assert snap.values["server.queue_waiting"] == {"": 55.0}
    assert snap.values["server.kv_cache_usage"] == {"": 0.99}
    assert snap.values["server.ttft"]["count"] == 112.0


def test_kv_cache_takes_the_fullest_engine() -> None:
    snap = page(VLLM_PAGE, SELECTOR)
    assert snap.values["server.kv_cache_usage"] == {"": 0.87}
    assert snap.names["server.kv_cache_usage"] == "vllm:kv_cache_usage_perc"


def test_by_labels_are_kept_apart() -> None:
    snap = page(VLLM_PAGE, SELECTOR)
    assert snap.values["server.requests"] == {
        "finished_reason=stop": 7.0,
        "finished_reason=length": 4.0,
        "finished_reason=abort": 1.0,
    }


def test_http_requests_count_only_the_completion_handlers() -> None:
    snap = page(VLLM_PAGE, SELECTOR)
    # /v1/models, /metrics, /health, and handlers only containing the regex are left out.
    assert snap.values["server.http_requests"] == {
        "status=2xx": 12.0,
        "status=4xx": 1.0,
        "status=5xx": 1.0,
    }


def test_families_absent_from_the_page_are_absent_from_the_snapshot() -> None:
    snap = page(VLLM_PAGE, SELECTOR)
    assert set(snap.values) == {
        "server.ttft",
        "server.requests_running",
        "server.queue_waiting",
        "server.kv_cache_usage",
        "server.prompt_tokens",
        "server.requests",
        "server.http_requests",
    }
    assert set(snap.names) == set(snap.values)
    assert snap.names["server.ttft"] == _TTFT


def test_a_model_name_selector_keeps_http_requests() -> None:
    snap = page(VLLM_PAGE, {**SELECTOR, "model_name": "llama-3-8b"})
    assert snap.values["server.queue_waiting"] == {"": 5.0}  # this part holds
    assert "server.http_requests" in snap.values


def test_a_selector_matching_nothing_gives_an_empty_snapshot() -> None:
    snap = page(VLLM_PAGE, {"namespace": "nowhere"})
    assert snap.values == {}
    assert snap.names == {}


# --- selectors ------------------------------------------------------------------------


def test_selector_exact_value() -> None:
    snap = page(VLLM_PAGE, {"pod": "llama-predictor-b"})
    assert snap.values["server.queue_waiting"] == {"": 3.0}
    assert snap.values["server.requests"] == {
        "finished_reason=stop": 2.0,
        "finished_reason=length": 1.0,
        "finished_reason=abort": 1.0,
    }


def test_selector_regex_is_anchored() -> None:
    snap = page(VLLM_PAGE, {"pod": "=~llama-predictor-.*"})
    # xllama-predictor-z contains the regex but does not match it whole.
    assert snap.values["server.requests_running"] == {"": 10.0}
    snap = page(VLLM_PAGE, {"pod": "=~llama-predictor-(a|c)"})
    assert snap.values["server.queue_waiting"] == {"": 52.0}
    snap = page(VLLM_PAGE, {"pod": "=~.*predictor-z"})
    assert snap.values["server.requests_running"] == {"": 40.0}


def test_selector_empty_value_matches_series_without_the_label() -> None:
    # As in PromQL, label="" selects the series that lack the label.
    snap = page(VLLM_PAGE, {"zone": ""})
    assert snap.values["server.queue_waiting"] == {"": 55.0}
    assert page(VLLM_PAGE, {"engine": ""}).values.get("server.queue_waiting") is None


# --- deprecated names -----------------------------------------------------------------

_OLD = 'model_name="llama-3-8b",engine="0"'


def test_deprecated_kv_cache_name_is_read_when_the_new_one_is_absent() -> None:
    text = f"""\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{{{_OLD}}} 0.25
vllm:gpu_cache_usage_perc{{model_name="llama-3-8b",engine="1"}} 0.5
"""
    snap = page(text)
    assert snap.values["server.kv_cache_usage"] == {"": 0.5}
    assert snap.names["server.kv_cache_usage"] == "vllm:gpu_cache_usage_perc"


def test_new_name_wins_when_both_are_exposed() -> None:
    text = f"""\
vllm:gpu_cache_usage_perc{{{_OLD}}} 0.9
vllm:kv_cache_usage_perc{{{_OLD}}} 0.3
"""
    snap = page(text)
    assert snap.values["server.kv_cache_usage"] == {"": 0.3}
    assert snap.names["server.kv_cache_usage"] == "vllm:kv_cache_usage_perc"


def test_deprecated_histogram_name_is_read_when_the_new_one_is_absent() -> None:
    text = f"""\
# TYPE vllm:time_per_output_token_seconds histogram
vllm:time_per_output_token_seconds_bucket{{{_OLD},le="0.01"}} 1.0
vllm:time_per_output_token_seconds_bucket{{{_OLD},le="0.025"}} 3.0
vllm:time_per_output_token_seconds_bucket{{{_OLD},le="+Inf"}} 3.0
vllm:time_per_output_token_seconds_count{{{_OLD}}} 3.0
vllm:time_per_output_token_seconds_sum{{{_OLD}}} 0.05
"""
    snap = page(text)
    assert snap.names["server.itl"] == "vllm:time_per_output_token_seconds"
    assert snap.values["server.itl"] == {
        "le=0.01": 1.0,
        "le=0.025": 3.0,
        "le=+Inf": 3.0,
        "count": 3.0,
        "sum": 0.05,
    }
    assert "server.tpot" not in snap.values


# --- NaN and bucket bounds ------------------------------------------------------------


def test_nan_samples_are_dropped_never_read_as_zero() -> None:
    text = f"""\
vllm:kv_cache_usage_perc{{{_OLD}}} NaN
vllm:num_requests_waiting{{{_OLD}}} NaN
vllm:num_requests_waiting{{model_name="llama-3-8b",engine="1"}} 2
vllm:num_requests_running{{{_OLD}}} -Inf
vllm:prompt_tokens_total{{{_OLD}}} +Inf
vllm:time_to_first_token_seconds_bucket{{{_OLD},le="0.1"}} NaN
vllm:time_to_first_token_seconds_bucket{{{_OLD},le="+Inf"}} 4
vllm:time_to_first_token_seconds_count{{{_OLD}}} 4
vllm:time_to_first_token_seconds_sum{{{_OLD}}} NaN
"""
    snap = page(text)
    assert "server.kv_cache_usage" not in snap.values  # only NaN: missing, not 0
    assert "server.requests_running" not in snap.values
    assert "server.prompt_tokens" not in snap.values
    # As PromQL's sum: one NaN engine makes the sum NaN, so the series is missing (not 2),
    # and a histogram with a NaN bucket or sum is missing entirely.
    assert "server.queue_waiting" not in snap.values
    assert "server.ttft" not in snap.values
    for by_key in snap.values.values():
        assert all(math.isfinite(v) for v in by_key.values())


def test_deprecated_name_is_used_when_the_new_name_is_only_nan() -> None:
    text = f"""\
vllm:kv_cache_usage_perc{{{_OLD}}} NaN
vllm:gpu_cache_usage_perc{{{_OLD}}} 0.6
"""
    snap = page(text)
    assert snap.values["server.kv_cache_usage"] == {"": 0.6}
    assert snap.names["server.kv_cache_usage"] == "vllm:gpu_cache_usage_perc"


@pytest.mark.parametrize(
    ("written", "key"),
    [
        ("1", "le=1.0"),
        ("1.0", "le=1.0"),
        ("1e0", "le=1.0"),
        ("0.5", "le=0.5"),
        ("0.50", "le=0.5"),
        ("+Inf", "le=+Inf"),
        ("Inf", "le=+Inf"),
        ("2560", "le=2560.0"),
        ("0.001", "le=0.001"),
        ("1e-3", "le=0.001"),
    ],
)
def test_le_is_written_one_way(written: str, key: str) -> None:
    text = f'vllm:e2e_request_latency_seconds_bucket{{le="{written}"}} 7\n'
    assert page(text).values["server.e2el"] == {key: 7.0}


def test_le_spellings_of_one_bound_add_up() -> None:
    text = """\
vllm:e2e_request_latency_seconds_bucket{engine="0",le="1"} 2
vllm:e2e_request_latency_seconds_bucket{engine="1",le="1.0"} 3
vllm:e2e_request_latency_seconds_bucket{engine="2",le="1.00"} 4
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf"} 2
vllm:e2e_request_latency_seconds_bucket{engine="1",le="+Inf"} 3
vllm:e2e_request_latency_seconds_bucket{engine="2",le="+Inf"} 4
"""
    assert page(text).values["server.e2el"] == {"le=1.0": 9.0, "le=+Inf": 9.0}


# --- DCGM -----------------------------------------------------------------------------


def test_dcgm_keeps_one_series_per_gpu_in_base_units() -> None:
    snap = page(DCGM_PAGE, {"namespace": "prod"}, kind="dcgm")
    expected = {
        "gpu.utilization": {KEY0: 0.87, KEY1: 0.12},
        "gpu.memory_used": {KEY0: 40960 * MIB, KEY1: 0.0},
        "gpu.power": {KEY0: 612.5, KEY1: 80.25},
        "gpu.temperature": {KEY0: 66.0, KEY1: 41.0},
        "gpu.sm_clock": {KEY0: 1.98e9, KEY1: 3.45e8},
        "gpu.tensor_active": {KEY0: 0.512, KEY1: 0.0},
    }
    # gpu.energy: see test_dcgm_energy_typed_counter_is_read.
    assert set(snap.values) - {"gpu.energy"} == set(expected)
    for metric, by_gpu in expected.items():
        assert snap.values[metric] == pytest.approx(by_gpu, rel=1e-12), metric
    assert snap.values["gpu.memory_used"][KEY0] == 42_949_672_960.0  # 40 GiB exactly
    assert snap.names["gpu.utilization"] == "DCGM_FI_DEV_GPU_UTIL"


def test_dcgm_energy_in_joules() -> None:
    text = f"""\
# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION gauge
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{_GPU0}}} 123456789
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{_GPU1}}} 2000
"""
    snap = page(text, kind="dcgm")
    assert snap.values["gpu.energy"] == pytest.approx({KEY0: 123456.789, KEY1: 2.0}, rel=1e-12)


def test_dcgm_energy_typed_counter_is_read() -> None:
    snap = page(DCGM_PAGE, kind="dcgm")
    assert snap.values["gpu.energy"] == pytest.approx({KEY0: 123456.789, KEY1: 2.0}, rel=1e-12)


def test_dcgm_series_key_without_hostname() -> None:
    text = 'DCGM_FI_DEV_GPU_TEMP{gpu="3",UUID="GPU-x",pod="p",namespace="n"} 50\n'
    assert page(text, kind="dcgm").values["gpu.temperature"] == {"gpu=3,UUID=GPU-x": 50.0}


def test_dcgm_selector_picks_the_pod_s_gpu() -> None:
    snap = page(DCGM_PAGE, {"pod": "llama-predictor-b"}, kind="dcgm")
    assert snap.values["gpu.utilization"] == pytest.approx({KEY1: 0.12})


def test_a_gpu_shared_by_two_pods_reads_as_prometheus_reads_it() -> None:
    shared = _GPU0.replace('pod="llama-predictor-a"', 'pod="llama-predictor-a2"')
    text = f"""\
DCGM_FI_DEV_GPU_TEMP{{{_GPU0}}} 66
DCGM_FI_DEV_GPU_TEMP{{{shared}}} 66
DCGM_FI_DEV_GPU_UTIL{{{_GPU0}}} 90
DCGM_FI_DEV_GPU_UTIL{{{shared}}} 90
"""
    page_snap = page(text, kind="dcgm")
    matrix = {
        "gpu.temperature": [
            _series(
                {
                    "__name__": "DCGM_FI_DEV_GPU_TEMP",
                    "Hostname": "node-1",
                    "gpu": "0",
                    "UUID": "GPU-0a1b2c3d",
                },
                (T0, "66"),
            )
        ],
        "gpu.utilization": [
            _series(
                {
                    "__name__": "DCGM_FI_DEV_GPU_UTIL",
                    "Hostname": "node-1",
                    "gpu": "0",
                    "UUID": "GPU-0a1b2c3d",
                },
                (T0, "90"),
            )
        ],
    }
    (prom_snap,) = snapshots_from_matrix(matrix, DCGM)
    assert prom_snap.values == page_snap.values  # 66 °C, not 132 °C


# --- the Prometheus path gives the same values ------------------------------------------


def test_matrix_and_page_give_equal_values() -> None:
    from_page = page(VLLM_PAGE, SELECTOR)
    (from_prom,) = snapshots_from_matrix(VLLM_MATRIX, VLLM)
    assert from_prom.wall == T0
    assert from_prom.values == from_page.values
    assert from_prom.names == from_page.names


def _dcgm_matrix(t: float) -> dict[str, list[dict[str, Any]]]:
    gpus = (("0", "GPU-0a1b2c3d"), ("1", "GPU-4e5f6a7b"))
    raw = {
        "gpu.utilization": ("DCGM_FI_DEV_GPU_UTIL", ("87", "12")),
        "gpu.memory_used": ("DCGM_FI_DEV_FB_USED", ("40960", "0")),
        "gpu.power": ("DCGM_FI_DEV_POWER_USAGE", ("612.5", "80.25")),
        "gpu.energy": ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", ("123456789", "2000")),
        "gpu.temperature": ("DCGM_FI_DEV_GPU_TEMP", ("66", "41")),
        "gpu.sm_clock": ("DCGM_FI_DEV_SM_CLOCK", ("1980", "345")),
        "gpu.tensor_active": ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", ("0.512", "0")),
    }
    return {
        metric: [
            _series({"__name__": name, "Hostname": "node-1", "gpu": gpu, "UUID": uuid}, (t, v))
            for (gpu, uuid), v in zip(gpus, values, strict=True)
        ]
        for metric, (name, values) in raw.items()
    }


def test_dcgm_matrix_and_page_give_equal_values() -> None:
    from_page = page(DCGM_PAGE, {"namespace": "prod"}, kind="dcgm")
    (from_prom,) = snapshots_from_matrix(_dcgm_matrix(T0), DCGM)
    assert from_prom.values["gpu.energy"] == pytest.approx({KEY0: 123456.789, KEY1: 2.0})
    assert from_prom.values == from_page.values
    # The text parser names the energy counter's samples ..._total; Prometheus does not.
    assert from_page.names.pop("gpu.energy") == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_total"
    assert from_prom.names.pop("gpu.energy") == "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
    assert from_prom.names == from_page.names


def test_matrix_gives_one_snapshot_per_timestamp_in_order() -> None:
    name = "vllm:num_requests_waiting"
    results = {
        "server.queue_waiting": [_series({"__name__": name}, (T0 + 2, "1"), (T0, "3"))],
        "server.prompt_tokens": [
            _series({"__name__": "vllm:prompt_tokens_total"}, (T0 + 1, "10"), (T0 + 2, "20"))
        ],
    }
    snaps = snapshots_from_matrix(results, VLLM)
    assert [s.wall for s in snaps] == [T0, T0 + 1, T0 + 2]
    assert [s.values for s in snaps] == [
        {"server.queue_waiting": {"": 3.0}},
        {"server.prompt_tokens": {"": 10.0}},
        {"server.queue_waiting": {"": 1.0}, "server.prompt_tokens": {"": 20.0}},
    ]
    assert snaps[0].names == {"server.queue_waiting": name}


def test_matrix_drops_nan_points_never_zero() -> None:
    results = {
        "server.queue_waiting": [
            _series({"__name__": "vllm:num_requests_waiting"}, (T0, "NaN"), (T0 + 1, "2"))
        ],
        "server.kv_cache_usage": [
            _series({"__name__": "vllm:kv_cache_usage_perc"}, (T0, "0.5"), (T0 + 1, "NaN"))
        ],
        "server.prompt_tokens": [
            _series({"__name__": "vllm:prompt_tokens_total"}, (T0, "+Inf"), (T0 + 1, "-Inf"))
        ],
    }
    snaps = snapshots_from_matrix(results, VLLM)
    assert [(s.wall, s.values) for s in snaps] == [
        (T0, {"server.kv_cache_usage": {"": 0.5}}),
        (T0 + 1, {"server.queue_waiting": {"": 2.0}}),
    ]


def test_matrix_deprecated_name_and_foreign_series() -> None:
    results = {
        "server.kv_cache_usage": [
            _series({"__name__": "vllm:gpu_cache_usage_perc"}, (T0, "0.7")),
        ],
        "server.itl": [  # both names: the newest one is read, as from a page
            _series({"__name__": "vllm:inter_token_latency_seconds_count"}, (T0, "5")),
            _series({"__name__": "vllm:time_per_output_token_seconds_count"}, (T0, "9")),
        ],
        "server.queue_waiting": [_series({"__name__": "something_else"}, (T0, "4"))],
    }
    (snap,) = snapshots_from_matrix(results, VLLM)
    assert snap.values == {"server.kv_cache_usage": {"": 0.7}, "server.itl": {"count": 5.0}}
    assert snap.names == {
        "server.kv_cache_usage": "vllm:gpu_cache_usage_perc",
        "server.itl": "vllm:inter_token_latency_seconds",
    }


def test_matrix_with_no_results_gives_no_snapshots() -> None:
    assert snapshots_from_matrix({}, VLLM) == []
    assert snapshots_from_matrix({"server.ttft": []}, VLLM) == []


def test_snapshot_json_round_trip() -> None:
    snap = page(VLLM_PAGE, SELECTOR)
    data = snap.to_json("scrape")
    assert data["source"] == "scrape"
    assert Snapshot.from_json(data) == snap


# --- pages captured from the real servers (tests/data/metrics) -------------------------


def captured(name: str) -> list[Sample]:
    path = METRICS_DIR / name
    if not path.exists():
        pytest.skip(f"{path} not captured yet (tests/data/metrics/capture.py)")
    return parse_exposition(path.read_text())


def _sample_value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and labels.items() <= lab.items()]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_captured_vllm_simulator_page() -> None:
    samples = captured("vllm_sim.txt")
    assert detect_kind({n for n, _, _ in samples}) == "vllm"
    # An engine selector leaves the HTTP counter alone: it has no engine label.
    snap = snapshot_from_samples(T0, samples, VLLM, {"engine": "=~[0-9]+"})
    assert set(snap.values) == {f.metric for f in VLLM}
    snap = snapshot_from_samples(T0, samples, VLLM)
    assert set(snap.values) == {f.metric for f in VLLM}
    assert snap.names["server.itl"] == "vllm:inter_token_latency_seconds"
    assert snap.names["server.kv_cache_usage"] == "vllm:kv_cache_usage_perc"
    ttft = snap.values["server.ttft"]
    count = _sample_value(samples, f"{_TTFT}_count")
    assert ttft["count"] == count == ttft["le=+Inf"]
    assert ttft["sum"] == _sample_value(samples, f"{_TTFT}_sum")
    assert "le=1.0" in ttft  # vLLM writes "1.0"
    bounds = sorted(float(k[3:]) for k in ttft if k.startswith("le=") and k != "le=+Inf")
    assert 2.0 not in bounds  # vLLM's TTFT buckets have no 2 s bound
    assert snap.values["server.requests"] == {
        f"finished_reason={r}": _sample_value(
            samples, "vllm:request_success_total", finished_reason=r
        )
        for r in ("stop", "length", "abort")
    }
    # The page counts one GET /v1/models too: not an answer to a completion.
    chat = _sample_value(samples, "http_requests_total", handler="/v1/chat/completions")
    assert snap.values["server.http_requests"] == {"status=2xx": chat}
    assert snap.values["server.generation_tokens"] == {
        "": _sample_value(samples, "vllm:generation_tokens_total")
    }


def test_captured_llamacpp_page() -> None:
    samples = captured("llamacpp.txt")
    assert detect_kind({n for n, _, _ in samples}) == "llamacpp"
    snap = snapshot_from_samples(T0, samples, FAMILIES["llamacpp"])
    # llama-server exposes no KV-cache gauge in this version.
    assert set(snap.values) == {
        "server.prompt_tokens",
        "server.generation_tokens",
        "server.requests_running",
        "server.queue_waiting",
        "server.decode_calls",
    }
    assert snap.values["server.prompt_tokens"] == {
        "": _sample_value(samples, "llamacpp:prompt_tokens_total")
    }
    assert snap.values["server.generation_tokens"] == {
        "": _sample_value(samples, "llamacpp:tokens_predicted_total")
    }


def test_captured_litellm_page() -> None:
    samples = captured("litellm.txt")
    assert detect_kind({n for n, _, _ in samples}) == "litellm"
    snap = snapshot_from_samples(T0, samples, FAMILIES["litellm"])
    assert {
        "gateway.e2el",
        "gateway.backend_latency",
        "gateway.ttft",
        "gateway.overhead",
        "gateway.requests",
        "gateway.failed_requests",
        "gateway.deployment_failures",
        "gateway.deployment_state",
    } <= set(snap.values)
    statuses = {
        lab["status_code"]: v
        for n, lab, v in samples
        if n == "litellm_proxy_total_requests_metric_total"
    }
    assert snap.values["gateway.requests"] == {f"status_code={k}": v for k, v in statuses.items()}
    e2el = snap.values["gateway.e2el"]
    assert e2el["count"] == e2el["le=+Inf"]
    states = [v for n, _, v in samples if n == "litellm_deployment_state"]
    assert snap.values["gateway.deployment_state"] == {"": max(states)}
    for by_key in snap.values.values():
        assert all(math.isfinite(v) for v in by_key.values())


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        ({"vllm:num_requests_running", "http_requests_total"}, "vllm"),
        ({"llamacpp:requests_processing"}, "llamacpp"),
        ({"litellm_deployment_state", "process_cpu_seconds_total"}, "litellm"),
        ({"DCGM_FI_DEV_GPU_UTIL"}, "dcgm"),
        ({"http_requests_total", "python_info"}, None),
        (set(), None),
    ],
)
def test_detect_kind(names: set[str], kind: str | None) -> None:
    assert detect_kind(names) == kind
