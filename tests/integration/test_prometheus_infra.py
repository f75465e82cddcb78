"""The real Prometheus and LiteLLM proxy the metric collectors are tested against.

These check the test infrastructure itself: that Prometheus scrapes what a server exposes
(the simulator's counters equal what the responses reported), that the proxy routes and
exposes `litellm_*` families behind its master key, and that synthetic history loads.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_api_client import PrometheusConnect
from support.litellm_proxy import litellm_proxy
from support.prometheus import ScrapeTarget, prometheus_server, tsdb_from_openmetrics

from harness.load.target import simulator

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    assert url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        return bytes(resp.read())


def _chat(base_url: str, model: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One non-streamed chat completion; the parsed response."""
    assert base_url.startswith("http://127.0.0.1:")
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    req = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
        assert resp.status == 200
        data: dict[str, Any] = json.loads(resp.read())
        return data


def _first_model(base_url: str, headers: dict[str, str] | None = None) -> str:
    return str(json.loads(_get(f"{base_url}/models", headers))["data"][0]["id"])


def _scalar(prom: PrometheusConnect, promql: str) -> float:
    result = prom.custom_query(promql)
    assert len(result) == 1, f"{promql}: {result}"
    return float(result[0]["value"][1])


@pytest.mark.usefixtures("prometheus_bin")
def test_prometheus_scrapes_the_simulator_counters_the_responses_reported() -> None:
    with simulator({}) as url:
        root = url.removesuffix("/v1")
        target = ScrapeTarget.from_url("sim", f"{root}/metrics", labels={"env": "test"})
        with prometheus_server([target], scrape_interval_s=1.0) as prom:
            model = _first_model(url)
            usages = [_chat(url, model)["usage"] for _ in range(3)]
            completion = sum(u["completion_tokens"] for u in usages)
            prompt = sum(u["prompt_tokens"] for u in usages)
            assert completion == 3 * 8

            # Wait for a scrape taken after the last response, then read it as the harness will.
            prom.wait_for_series(f"sum(vllm:generation_tokens_total) >= {completion}")
            client = PrometheusConnect(url=prom.url, disable_ssl=True)
            generated = 'sum(vllm:generation_tokens_total{job="sim", env="test"})'
            assert _scalar(client, generated) == completion
            assert _scalar(client, "sum(vllm:prompt_tokens_total)") == prompt
            assert _scalar(client, 'up{job="sim"}') == 1


@pytest.mark.usefixtures("prometheus_bin", "litellm_bin")
def test_litellm_proxy_routes_to_the_simulator_and_is_scraped_with_its_key() -> None:
    with simulator({}) as url, litellm_proxy(url, metrics_auth=True) as proxy:
        auth = proxy.auth_headers
        model = _first_model(url)
        response = _chat(proxy.base_url, model, auth)
        assert response["usage"]["completion_tokens"] == 8

        assert proxy.metrics_url == f"{proxy.root}/metrics/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(proxy.metrics_url)
        assert refused.value.code == 401
        text = _get(proxy.metrics_url, auth).decode()
        assert "# TYPE litellm_proxy_total_requests_metric_total counter" in text
        assert "litellm_output_tokens_metric_total{" in text

        target = ScrapeTarget.from_url("litellm", proxy.metrics_url, bearer_token=proxy.master_key)
        with prometheus_server([target]) as prom:
            prom.wait_for_series(
                'litellm_proxy_total_requests_metric_total{job="litellm", status_code="200"}'
            )
            client = PrometheusConnect(url=prom.url, disable_ssl=True)
            assert _scalar(client, "sum(litellm_output_tokens_metric_total)") == 8


@pytest.mark.usefixtures("prometheus_bin")
def test_history_written_by_promtool_is_queryable_at_once(tmp_path: Path) -> None:
    end = float(int(time.time()) - 600)
    start = end - 3 * 3600  # older than the 1 h live retention: must survive start-up
    lines = ["# TYPE vllm:generation_tokens counter"]
    lines += [
        f'vllm:generation_tokens_total{{model_name="m"}} {10 * i} {start + 60 * i:.0f}'
        for i in range(181)
    ]
    tsdb_from_openmetrics("\n".join(lines) + "\n", tmp_path / "tsdb")
    with prometheus_server([], storage_dir=tmp_path / "tsdb") as prom:
        client = PrometheusConnect(url=prom.url, disable_ssl=True)
        series = client.custom_query_range(
            "rate(vllm:generation_tokens_total[5m])",
            start_time=datetime.fromtimestamp(start + 600, tz=UTC),
            end_time=datetime.fromtimestamp(end, tz=UTC),
            step="600s",
        )
        assert len(series) == 1
        values = [float(v) for _, v in series[0]["values"]]
        assert len(values) == 18
        assert values == pytest.approx([10 / 60] * 18)
