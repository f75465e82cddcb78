"""Collectors against real servers: the simulator (vLLM names), llama.cpp and the LiteLLM
proxy, each read by direct scraping and through a real Prometheus, checked against what the
client sent. Every run is a `harness run` through the CLI, a few seconds long."""

from __future__ import annotations

import http.server
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import DECISION_EXIT, only_run_dir, read_json, run_cli
from support.http_stub import serving
from support.litellm_proxy import litellm_proxy
from support.prometheus import ScrapeTarget, prometheus_server

from harness.collectors.stored import read_samples
from harness.load.target import simulator
from harness.records.log import read_frame

pytestmark = pytest.mark.integration

SIM = {"max_num_seqs": 32, "step_base_s": 0.01}
SERVER_POLICY: dict[str, Any] = {
    "schema": 1,
    "name": "server-side",
    "objectives": [
        {"name": "server-ttft", "metric": "server.ttft", "stat": "p99", "target": "1s"},
        {"name": "queue", "metric": "server.queue_waiting", "stat": "max", "target": 1000},
        {"name": "tokens", "metric": "server.generation_token_rate", "stat": "value",
         "target": 1, "critical": False},
    ],
}  # fmt: skip


def scenario(
    tmp: Path,
    url: str,
    collect: dict[str, Any],
    *,
    policy: dict[str, Any] | None = None,
    model: str | None = None,
    duration_s: float = 6,
    api_key_env: str | None = None,
) -> Path:
    """A short open-loop scenario file against url, judged by policy (written beside it)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy or SERVER_POLICY))
    target: dict[str, Any] = {"url": url, "model": model}
    if api_key_env:
        target["api_key_env"] = api_key_env
    doc = {
        "schema": 1,
        "name": "collect",
        "target": target,
        "workload": {"type": "synthetic", "prompt_tokens": 32, "max_tokens": 12, "seed": 3},
        "load": {
            "arrival": {"type": "poisson", "rate": 8, "max_concurrency": 16},
            "warmup_s": 1,
            "duration_s": duration_s,
            "drain_timeout_s": 20,
        },
        "collect": collect,
        "policy": str(tmp / "policy.yaml"),
    }
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(path: Path, out: Path, timeout: float = 120.0, **env: str) -> tuple[int, Path, str]:
    proc = run_cli("run", str(path), "--out", str(out), timeout=timeout, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, only_run_dir(out), proc.stdout + proc.stderr


def client_tokens(run_dir: Path) -> int:
    frame = read_frame(run_dir)
    return int(frame["output_tokens"].fillna(0).sum())


def windows(doc: dict[str, Any], name: str) -> dict[str, Any]:
    source = next(s for s in doc["sources"] if s["name"] == name)
    assert not source.get("problems"), source.get("problems")
    w: dict[str, Any] = source["windows"]
    return w


def objective(verdict: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(o for o in verdict["objectives"] if o["name"] == name)
    return found


def test_direct_scrape_and_prometheus_agree_on_one_run(tmp_path: Path, prometheus_bin: str) -> None:
    with simulator(SIM) as url:
        page = url.removesuffix("/v1") + "/metrics"
        with prometheus_server([ScrapeTarget.from_url("sim", page)]) as prom:
            prom.wait_for_series("vllm:num_requests_running")
            path = scenario(tmp_path, url, {
                "interval_s": 1,
                "prometheus": {"url": prom.url, "settle_s": 15},
                "servers": [
                    {"kind": "vllm", "via": "scrape"},
                    {"kind": "vllm", "via": "prometheus", "selector": {"job": "sim"}},
                ],
            })  # fmt: skip
            code, run_dir, output = run(path, tmp_path / "out")
    assert code == 0, output
    doc = read_json(run_dir / "server.json")
    direct, prom_w = windows(doc, "vllm"), windows(doc, "vllm-2")
    sent = client_tokens(run_dir)
    frame = read_frame(run_dir)
    answered = int(frame["status"].notna().sum())
    # The whole run: both modes see every request, so they agree exactly with the client, but
    # for the one-token test request sent before the load, which lands in the run window when
    # the server counts it after the first reading (a scrape or Prometheus sample).
    assert read_json(run_dir / "manifest.json")["target"]["preflight"]["status"] == 200
    for w in (direct["run"], prom_w["run"]):
        assert sum(w["counters"]["server.generation_tokens"].values()) - sent in (0, 1)
        assert sum(w["counters"]["server.http_requests"].values()) - answered in (0, 1)
        assert w["histograms"]["server.ttft"]["count"] - answered in (0, 1)
    # The measured window: the two modes read the counters at instants up to one scrape
    # interval apart (8 req/s, 1 s interval), so they agree within about one interval's worth.
    a = direct["measure"]["histograms"]["server.e2el"]["count"]
    b = prom_w["measure"]["histograms"]["server.e2el"]["count"]
    assert abs(a - b) <= 2 * 8 + 2, (a, b)
    ta = sum(direct["measure"]["counters"]["server.generation_tokens"].values())
    tb = sum(prom_w["measure"]["counters"]["server.generation_tokens"].values())
    assert abs(ta - tb) <= 12 * (2 * 8 + 2), (ta, tb)
    # Gauges became series in samples.parquet under both sources.
    samples = read_samples(run_dir).to_pandas()
    for source in ("vllm", "vllm-2"):
        mine = samples[
            (samples["source"] == source) & (samples["metric"] == "server.queue_waiting")
        ]
        assert len(mine) >= 5
    verdict = read_json(run_dir / "verdict.json")
    assert objective(verdict, "server-ttft")["verdict"] == "PASS"
    assert objective(verdict, "server-ttft")["interval"] is not None  # the bucket
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["output tokens vs server"]["ok"] is True
    assert checks["ttft vs server.ttft"]["ok"] is True, checks
    # The exact share under the policy's bound (1 s is one of vLLM's TTFT bucket bounds).
    share = verdict["collected"]["histograms"]["server.ttft"]["share_under"]["1"]
    assert share == {"share": 1.0, "exact": True, "between": [1.0, 1.0]}
    assert "### Server side (measured window)" in (run_dir / "summary.md").read_text()
    # Re-judging the stored run reads the same server data to the same verdicts.
    again = run_cli("evaluate", str(run_dir))
    assert again.returncode == 0, again.stderr
    rejudged = read_json(run_dir / "verdict.json")
    assert rejudged["objectives"] == verdict["objectives"]
    assert rejudged["checks"] == verdict["checks"]
    promql = next(s for s in doc["sources"] if s["name"] == "vllm-2")["queries"]
    assert promql["server.ttft"].startswith("sum by (__name__, le) (")


@pytest.mark.llama
def test_llama_cpp_through_prometheus(tmp_path: Path, llama_url: str, prometheus_bin: str) -> None:
    page = llama_url.removesuffix("/v1") + "/metrics"
    with prometheus_server([ScrapeTarget.from_url("llama", page)]) as prom:
        prom.wait_for_series("llamacpp:requests_processing")
        policy = {
            "schema": 1,
            "name": "llama",
            "objectives": [
                {"name": "tokens", "metric": "server.generation_token_rate", "stat": "value",
                 "target": 1},
                {"name": "waiting", "metric": "server.queue_waiting", "stat": "max",
                 "target": 100},
                {"name": "ttft", "metric": "server.ttft", "stat": "p99", "target": "1s",
                 "critical": False},
            ],
        }  # fmt: skip
        path = scenario(
            tmp_path, llama_url, {"prometheus": {"url": prom.url, "settle_s": 15}},
            policy=policy, model="tiny-llama", duration_s=4,
        )  # fmt: skip
        code, run_dir, output = run(path, tmp_path / "out")
    assert code == 0, output
    doc = read_json(run_dir / "server.json")
    source = doc["sources"][0]
    assert source["kind"] == "llamacpp"  # detected from the series Prometheus holds
    run_w = source["windows"]["run"]
    # (+1 at most: the one-token test request before the load, when counted after the first
    # reading.)
    extra = sum(run_w["counters"]["server.generation_tokens"].values()) - client_tokens(run_dir)
    assert extra in (0, 1)
    verdict = read_json(run_dir / "verdict.json")
    assert objective(verdict, "tokens")["verdict"] == "PASS"
    assert objective(verdict, "waiting")["verdict"] == "PASS"
    ttft = objective(verdict, "ttft")
    assert ttft["verdict"] == "INCONCLUSIVE"
    assert "not measured by a llamacpp server" in ttft["reason"]


def test_litellm_gateway_and_engine_through_prometheus(
    tmp_path: Path, prometheus_bin: str, litellm_bin: Path
) -> None:
    key = "sk-collector-test-key-123"
    with simulator(SIM) as url, litellm_proxy(url, master_key=key) as proxy:
        sim_page = url.removesuffix("/v1") + "/metrics"
        targets = [
            ScrapeTarget.from_url("sim", sim_page),
            ScrapeTarget.from_url("litellm", proxy.metrics_url),
        ]
        with prometheus_server(targets) as prom:
            prom.wait_for_series("vllm:num_requests_running")
            policy = {
                "schema": 1,
                "name": "gateway",
                "objectives": [
                    {"name": "gateway-errors", "metric": "gateway.error_rate", "stat": "value",
                     "target": "1%"},
                    {"name": "overhead", "metric": "gateway.overhead", "stat": "p50",
                     "target": "10s", "critical": False},
                ],
            }  # fmt: skip
            path = scenario(
                tmp_path, proxy.base_url,
                {"prometheus": {"url": prom.url, "settle_s": 20}, "servers": [
                    {"kind": "litellm", "selector": {"job": "litellm"}},
                    {"kind": "vllm", "selector": {"job": "sim"}},
                ]},
                policy=policy, model="sim-llama-3-8b", duration_s=4, api_key_env="GATEWAY_KEY",
            )  # fmt: skip
            code, run_dir, output = run(path, tmp_path / "out", timeout=180, GATEWAY_KEY=key)
    assert code == DECISION_EXIT[read_json(run_dir / "verdict.json")["decision"]], output
    doc = read_json(run_dir / "server.json")
    gateway = windows(doc, "litellm")["run"]
    engine = windows(doc, "vllm")["run"]
    frame = read_frame(run_dir)
    ok = int(frame["error"].isna().sum())
    assert ok > 10
    # Each count may hold the one test request sent before the load (see above).
    assert gateway["counters"]["gateway.requests"].get("status_code=200") - ok in (0, 1)
    assert gateway["histograms"]["gateway.e2el"]["count"] - ok in (0, 1)
    assert sum(engine["counters"]["server.http_requests"].values()) - ok in (0, 1)
    verdict = read_json(run_dir / "verdict.json")
    assert objective(verdict, "gateway-errors")["verdict"] == "PASS"
    for f in run_dir.iterdir():  # the key never reaches results
        if f.is_file():
            assert key not in f.read_text(errors="replace"), f.name


class _Page(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def nan_page() -> Iterator[str]:
    """A vLLM-named page whose gauges read NaN (as an engine mid-restart can)."""

    class Page(_Page):
        body = (
            b"# TYPE vllm:num_requests_waiting gauge\n"
            b'vllm:num_requests_waiting{model_name="m"} NaN\n'
            b"# TYPE vllm:generation_tokens_total counter\n"
            b'vllm:generation_tokens_total{model_name="m"} NaN\n'
        )

    with serving(Page) as url:
        yield f"{url}/metrics"


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A TCP port that accepts and never answers: a Prometheus too slow to be waited for."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _closed_port() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _judged_inconclusive(tmp: Path, url: str, prom_url: str, selector: dict[str, str],
                         timeout_s: float = 2) -> dict[str, Any]:  # fmt: skip
    path = scenario(tmp, url, {
        "gpu": "off",
        "prometheus": {"url": prom_url, "settle_s": 3, "timeout_s": timeout_s},
        "servers": [{"kind": "vllm", "selector": selector}],
    }, duration_s=2)  # fmt: skip
    code, run_dir, output = run(path, tmp / "out")
    verdict: dict[str, Any] = read_json(run_dir / "verdict.json")
    assert code == 3, output  # INCONCLUSIVE: critical objectives lack their data
    assert verdict["decision"] == "INCONCLUSIVE"
    for name in ("server-ttft", "queue"):
        assert objective(verdict, name)["verdict"] == "INCONCLUSIVE"
    return verdict


def test_prometheus_down_slow_nan_or_empty_is_inconclusive(
    tmp_path: Path, prometheus_bin: str, nan_page: str, black_hole: str
) -> None:
    with simulator(SIM) as url:
        down = _judged_inconclusive(tmp_path / "down", url, _closed_port(), {})
        reason = objective(down, "server-ttft")["reason"]
        assert "unreachable" in reason, reason
        slow = _judged_inconclusive(tmp_path / "slow", url, black_hole, {}, timeout_s=1)
        reason = objective(slow, "server-ttft")["reason"]
        assert "did not answer in time" in reason, reason
        with prometheus_server([ScrapeTarget.from_url("nan", nan_page)]) as prom:
            prom.wait_for_series("vllm:num_requests_waiting")
            nan = _judged_inconclusive(tmp_path / "nan", url, prom.url, {"job": "nan"})
            assert "no server.queue_waiting" in objective(nan, "queue")["reason"]
            empty = _judged_inconclusive(tmp_path / "empty", url, prom.url, {"job": "nope"})
            assert 'job="nope"' in objective(empty, "queue")["reason"]
