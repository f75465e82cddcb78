"""The PromQL sent to Prometheus: golden files pin each kind's queries (regenerate with
UPDATE_GOLDEN=1), plus string quoting, label matchers and what each query selects."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from harness.collectors.families import FAMILIES, GPU_LABELS, Family, ServerKind
from harness.collectors.promql import family_query, label_matchers, quote

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "data" / "promql"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

#: The selector each kind's golden file is written with: a KServe predictor's pods.
SELECTORS: dict[ServerKind, dict[str, str]] = {
    "vllm": {"namespace": "prod", "model_name": "llama-3-8b", "pod": "=~llama-predictor-.*"},
    "llamacpp": {"namespace": "prod", "pod": "=~llama-cpp-.*"},
    "litellm": {"namespace": "gateway", "job": "litellm", "requested_model": "llama-3-8b"},
    "dcgm": {"namespace": "prod", "pod": "=~llama-predictor-.*", "Hostname": "=~gpu-node-[0-9]+"},
}


def golden_text(kind: ServerKind) -> str:
    lines = [f"{fam.metric}\t{family_query(fam, SELECTORS[kind])}" for fam in FAMILIES[kind]]
    return "\n".join(lines) + "\n"


def test_every_kind_has_a_selector() -> None:
    assert set(SELECTORS) == set(FAMILIES)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_golden_queries(kind: ServerKind) -> None:
    path = GOLDEN_DIR / f"{kind}.promql"
    text = golden_text(kind)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1"
    expected = path.read_text()
    assert text == expected, f"PromQL for {kind} changed; if intended, rerun with UPDATE_GOLDEN=1"


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_golden_files_list_each_family_once(kind: ServerKind) -> None:
    path = GOLDEN_DIR / f"{kind}.promql"
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    assert all(len(row) == 2 for row in rows)
    assert [row[0] for row in rows] == [f.metric for f in FAMILIES[kind]]


# --- quote and label_matchers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("prod", '"prod"'),
        ("", '""'),
        ('say "hi"', r'"say \"hi\""'),
        ("C:\\models", r'"C:\\models"'),
        (r"\d+", r'"\\d+"'),  # a regex escape survives PromQL's string unescaping
        ('\\"', r'"\\\""'),  # backslash first, then the quote
        ("llama-predictor-.*", '"llama-predictor-.*"'),
        ("é/μ", '"é/μ"'),
    ],
)
def test_quote(value: str, literal: str) -> None:
    assert quote(value) == literal


def _unquote(literal: str) -> str:
    """PromQL's reading of a double-quoted string (Go escapes; only \\\\ and \\" here)."""
    assert literal[0] == literal[-1] == '"'
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


@pytest.mark.parametrize("value", ['a"b', "a\\b", '\\"', "x\\", 'q"\\"q', "plain"])
def test_quote_round_trips(value: str) -> None:
    assert _unquote(quote(value)) == value


def test_label_matchers_exact_and_regex_sorted_by_label() -> None:
    selector = {"pod": "=~llama-predictor-.*", "namespace": "prod", "model_name": "llama-3-8b"}
    assert label_matchers(selector) == (
        'model_name="llama-3-8b",namespace="prod",pod=~"llama-predictor-.*"'
    )


def test_label_matchers_family_regexes_come_last() -> None:
    extra = (("handler", "/v1/(chat/)?completions"),)
    assert label_matchers({"namespace": "prod"}, extra) == (
        'namespace="prod",handler=~"/v1/(chat/)?completions"'
    )
    assert label_matchers({}, extra) == 'handler=~"/v1/(chat/)?completions"'
    assert label_matchers({}) == ""


def test_label_matchers_quote_values() -> None:
    assert label_matchers({"a": 'x"y', "b": "=~\\d+"}) == 'a="x\\"y",b=~"\\\\d+"'
    assert label_matchers({"a": "=~"}) == 'a=~""'  # an empty regex: only "" matches


# --- what the queries select ------------------------------------------------------------


def _name_regex(query: str) -> str:
    found = re.search(r'__name__=~"((?:[^"\\]|\\.)*)"', query)
    assert found is not None, query
    return _unquote(f'"{found.group(1)}"')


@pytest.mark.parametrize(
    "fam", [f for fams in FAMILIES.values() for f in fams], ids=lambda f: f.metric
)
def test_each_query_selects_exactly_the_family_samples(fam: Family) -> None:
    query = family_query(fam, {})
    rx = re.compile(_name_regex(query))
    for name in fam.names:
        for sample in fam.sample_names(name):
            assert rx.fullmatch(sample), (sample, query)
        for other in (f"{name}_created", f"{name}x", f"x{name}", f"{name}_bucket_total"):
            assert not rx.fullmatch(other), (other, query)


def test_query_shapes() -> None:
    by_metric = {f.metric: f for f in (*FAMILIES["vllm"], *FAMILIES["dcgm"])}
    sel = {"namespace": "prod"}
    assert family_query(by_metric["server.ttft"], sel) == (
        'sum by (__name__, le) ({__name__=~"(vllm:time_to_first_token_seconds)_(bucket|sum|count)"'
        ',namespace="prod"})'
    )
    assert family_query(by_metric["server.kv_cache_usage"], {}) == (
        'max by (__name__) ({__name__=~"(vllm:kv_cache_usage_perc|vllm:gpu_cache_usage_perc)"})'
    )
    assert family_query(by_metric["server.http_requests"], sel) == (
        'sum by (__name__, status) ({__name__=~"http_requests_total",namespace="prod",'
        'handler=~"/v1/(chat/)?completions"})'
    )
    gpu = family_query(by_metric["gpu.utilization"], sel)
    assert gpu.startswith(f"max by (__name__, {', '.join(GPU_LABELS)}) (")


def test_quote_escapes_a_newline() -> None:
    assert quote("a\nb") == r'"a\nb"'
