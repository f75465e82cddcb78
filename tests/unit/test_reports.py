"""Reports: verdict.json contract, junit.xml structure, summary.md and the terminal table."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from rich.console import Console

from harness.judge.analysis import RunMetrics
from harness.judge.classify import evaluate
from harness.judge.verdict import Classification, Decision, Verdict
from harness.report.files import write_reports
from harness.report.junit import render_junit
from harness.report.markdown import render_markdown
from harness.report.table import print_verdict, verdict_renderable
from harness.spec.policy import Policy

POLICY = Policy.model_validate(
    {
        "name": "runbook",
        "objectives": [
            {"name": "P50 latency", "metric": "e2el", "stat": "p50",
             "target": "500ms", "alert": "1s"},
            {"name": "P99 latency", "metric": "e2el", "stat": "p99",
             "target": "2s", "alert": "5s"},
            {"name": "Error rate", "metric": "error_rate", "stat": "value",
             "target": "0.1%", "alert": "1%"},
            {"name": "TPOT", "metric": "tpot", "stat": "p90", "target": "50ms"},
            {"name": "GPU", "metric": "gpu.utilization", "stat": "mean",
             "target": {"min": "60%", "max": "80%"}, "alert": "95%", "critical": False},
            {"name": "Goodput", "metric": "goodput", "stat": "value", "target": "100/s",
             "critical": False},
        ],
    }
)  # fmt: skip

EXPECTED = {
    "P50 latency": Classification.PASS,
    "P99 latency": Classification.FAIL,
    "Error rate": Classification.WARN,
    "TPOT": Classification.INCONCLUSIVE,
    "GPU": Classification.INCONCLUSIVE,
    "Goodput": Classification.FAIL,
}


def run_metrics() -> RunMetrics:
    e2el = np.array([0.3] * 95 + [6.0] * 5)
    return RunMetrics(
        samples=MappingProxyType(
            {
                "e2el": e2el,
                "ttft": np.full(100, 0.1),
                "itl": np.full(900, 0.02),
                "tpot": np.array([], dtype=np.float64),
            }
        ),
        scalars=MappingProxyType(
            {"error_rate": 0.005, "request_rate": 9.95, "output_token_rate": 995.0, "goodput": 9.5}
        ),
        attempted=20_000,  # enough that 0.5 % errors is WARN at 95 %, not undecided
        failed=100,
        succeeded=19_900,
        good=19_000,
        error_classes=MappingProxyType({"timeout": 3, "http_status": 2}),
        duration_s=2000.0,
        prompt_tokens_mean=128.0,
        output_tokens_mean=100.0,
    )


@pytest.fixture
def verdict() -> Verdict:
    v = evaluate(POLICY, run_metrics())
    assert {o.name: o.verdict for o in v.objectives} == EXPECTED
    assert v.decision is Decision.FAIL
    return v


def test_verdict_json_top_level_follows_the_design(tmp_path: Path, verdict: Verdict) -> None:
    write_reports(tmp_path / "run", verdict)
    doc = json.loads((tmp_path / "run" / "verdict.json").read_text())
    assert list(doc)[:4] == ["schema", "decision", "objectives", "summary"]
    assert isinstance(doc["schema"], int)
    assert doc["decision"] == "FAIL"
    assert len(doc["objectives"]) == len(POLICY.objectives)
    for obj in doc["objectives"]:
        assert {
            "name",
            "metric",
            "stat",
            "estimate",
            "unit",
            "interval",
            "n",
            "verdict",
            "reason",
        } <= set(obj)
    p99 = doc["objectives"][1]
    assert p99["estimate"] == pytest.approx(float(np.percentile([0.3] * 95 + [6.0] * 5, 99)))
    # 100 samples bound a p99 from below only (its upper bound needs 299): null above.
    assert (p99["unit"], p99["interval"], p99["n"], p99["verdict"]) == (
        "s",
        [6.0, None],
        100,
        "FAIL",
    )
    assert doc["objectives"][3]["estimate"] is None
    summary = doc["summary"]
    assert summary["requests"] == 20_000
    assert summary["errors"] == 100
    assert summary["request_rate"] == 9.95
    assert summary["output_token_rate"] == 995.0
    assert summary["goodput"] == 9.5
    for key in ("ttft_s", "tpot_s", "itl_s", "e2el_s"):
        assert {"mean", "p50", "p90", "p99"} <= set(summary[key])
    assert summary["e2el_s"]["p50"] == 0.3
    assert summary["tpot_s"]["p99"] is None


def test_write_reports_leaves_exactly_the_three_files(tmp_path: Path, verdict: Verdict) -> None:
    write_reports(tmp_path, verdict)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml", "summary.md", "verdict.json"]
    assert (tmp_path / "verdict.json").read_text() == verdict.to_json()


def test_junit_has_one_testcase_per_objective(verdict: Verdict) -> None:
    root = ET.fromstring(render_junit(verdict))
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    cases = {case.get("name"): case for case in suites[0].findall("testcase")}
    assert list(cases) == [o.name for o in POLICY.objectives]

    failure = cases["P99 latency"].find("failure")
    assert failure is not None
    assert failure.get("type") == "fail"
    assert "p99 e2el" in (failure.get("message") or "")
    inconclusive = cases["TPOT"].find("failure")  # critical: red in CI
    assert inconclusive is not None
    assert inconclusive.get("type") == "inconclusive"
    assert cases["GPU"].find("skipped") is not None  # advisory
    for name in ("P50 latency", "Error rate", "Goodput"):
        assert cases[name].find("failure") is None
        assert cases[name].find("skipped") is None
    assert "WARN" in (cases["Error rate"].findtext("system-out") or "")
    assert "FAIL (advisory)" in (cases["Goodput"].findtext("system-out") or "")

    for element in (root, suites[0]):
        assert element.get("tests") == "6"
        assert element.get("failures") == "2"
        assert element.get("skipped") == "1"
        assert element.get("errors") == "0"
    props = {p.get("name"): p.get("value") for p in suites[0].iter("property")}
    assert props == {"decision": "FAIL", "policy": "runbook"}


def test_junit_marks_an_invalid_run_as_an_error(verdict: Verdict) -> None:
    from dataclasses import replace

    invalid = replace(
        verdict, decision=Decision.INVALID, invalid_reason="target <unreachable> & down"
    )
    root = ET.fromstring(render_junit(invalid))
    errors = root.findall(".//testcase/error")
    assert [e.get("message") for e in errors] == ["target <unreachable> & down"]
    assert root.get("errors") == "1"
    assert root.get("tests") == "7"


def test_summary_markdown(verdict: Verdict) -> None:
    md = render_markdown(verdict)
    assert md.splitlines()[0] == "## ❌ SLO verdict: FAIL"
    assert "| P99 latency | p99 e2el |" in md
    assert "❌ FAIL" in md
    assert "❔ INCONCLUSIVE" in md
    assert "| GPU (advisory) |" in md
    assert "| timeout | 3 |" in md
    assert "| E2EL | " in md
    assert "| 20000 | 100 (0.5 %) |" in md
    # every table row has the column count of its header
    for block in md.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({row.replace("\\|", "").count("|") for row in rows}) == 1


def test_markdown_escapes_pipes_in_reasons(verdict: Verdict) -> None:
    from dataclasses import replace

    odd = replace(verdict.objectives[0], name="a|b", reason="x | y\nz")
    md = render_markdown(replace(verdict, objectives=(odd,)))
    assert "| a\\|b |" in md
    assert "x \\| y z" in md


def test_terminal_table(verdict: Verdict) -> None:
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    print_verdict(verdict, console)
    text = out.getvalue()
    for name in EXPECTED:
        assert name in text
    assert "p99 e2el 6 s > alert 5 s (target 2 s)" in text
    assert "(advisory)" in text
    assert "20000 requests, 100 errors (0.5 %)" in text
    assert "9.95/s req" in text
    assert "TTFT 100 ms / 100 ms" in text
    assert "decision: FAIL" in text


def test_terminal_table_prints_brackets_literally(verdict: Verdict) -> None:
    from dataclasses import replace

    odd = replace(
        verdict.objectives[0], verdict=Classification.FAIL, reason="[bold]not markup[/bold]"
    )
    console = Console(file=io.StringIO(), width=200, color_system=None, record=True)
    console.print(verdict_renderable(replace(verdict, objectives=(odd,))))
    assert "[bold]not markup[/bold]" in console.export_text()
