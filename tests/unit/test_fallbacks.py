"""Fallbacks never hide a failing backend: who served each request, read from a gateway's
headers; fallback-served requests counted, bounded by a policy, and as errors when it says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from test_analysis import frame, rec

from harness import cli
from harness.canary.compare import ShiftClass, compare_errors
from harness.errors import ConfigError, ExitCode
from harness.flows.evaluate import compare_runs
from harness.judge.analysis import analyse, summarise
from harness.judge.classify import evaluate, judge_objective
from harness.judge.looks import LookTallies
from harness.judge.served import NO_RULE, ServedRule, expected_backends
from harness.judge.verdict import Classification
from harness.load.openai_api import gateway_route
from harness.records.log import RECORD_SCHEMA, RecordLog, consolidate, read_table
from harness.records.record import ErrorClass, RequestRecord
from harness.report.markdown import render_markdown
from harness.report.table import verdict_renderable
from harness.spec.config import validate
from harness.spec.policy import Objective, Policy
from harness.spec.scenario import Scenario

STORED = Path(__file__).resolve().parents[1] / "data/runs/stored-run"
PRIMARY = "http://10.0.0.7:8000/v1"
BACKUP = "http://10.0.0.9:8000/v1"
ERRORS = {"name": "errors", "metric": "error_rate", "stat": "value", "target": "1%"}
FALLBACKS = {"name": "fallbacks", "metric": "fallback_rate", "stat": "value",
             "target": "0.1%", "alert": "1%"}  # fmt: skip


def policy(as_error: bool = False, *objectives: dict[str, Any]) -> Policy:
    return Policy.model_validate(
        {"name": "p", "fallback_counts_as_error": as_error,
         "objectives": list(objectives) or [ERRORS]}
    )  # fmt: skip


def headers(**values: str) -> Any:
    """A case-insensitive header lookup, as the response gives it."""
    lowered = {k.replace("_", "-").lower(): v for k, v in values.items()}
    return lambda name: lowered.get(name.lower())


# --- the client's reading of the gateway -------------------------------------------------


def test_the_gateway_route_is_read_from_litellm_s_headers() -> None:
    route = gateway_route(
        headers(
            x_litellm_model_api_base="https://user:pw@GW.example:4000/openai/v1/?key=sk-1#x",
            x_litellm_model_id="abc",
            x_litellm_attempted_fallbacks="1",
            x_litellm_attempted_retries="2",
        )
    )
    assert route == ("https://gw.example:4000/openai/v1", 1, 2)
    # No api base (a provider without one): the deployment id names it.
    assert gateway_route(headers(x_litellm_model_id="canary-7")) == ("canary-7", None, None)
    assert gateway_route(headers()) == (None, None, None)


@pytest.mark.parametrize("value", ["", "-1", "1.5", "one", "99999999999"])
def test_a_count_header_that_is_not_a_count_is_left_out(value: str) -> None:
    assert gateway_route(headers(x_litellm_attempted_fallbacks=value))[1] is None


def test_the_new_fields_survive_the_log_and_parquet(tmp_path: Path) -> None:
    served = rec(served_by=BACKUP, fallbacks=1, retries=0, served_model="fallback")
    log = RecordLog(tmp_path)
    log.write(served)
    log.write(rec(request_id=1))
    log.close()
    assert RequestRecord.from_row(read_table(tmp_path).to_pylist()[0]) == served
    consolidate(tmp_path)
    rows = read_table(tmp_path).to_pylist()
    assert RequestRecord.from_row(rows[0]) == served
    assert RequestRecord.from_row(rows[1]).served_by is None


# --- counting fallback-served requests ---------------------------------------------------


KINDS: dict[str, dict[str, Any]] = {
    "ok": {"served_by": PRIMARY, "fallbacks": 0},
    "fallback": {"served_by": BACKUP, "fallbacks": 2},
    "elsewhere": {"served_by": BACKUP, "fallbacks": 0},  # a retry or a balanced group
    "bare": {},  # a server that names no deployment
    "failed": {"served_by": BACKUP, "fallbacks": 1, "status": 502,
               "error": ErrorClass.HTTP_STATUS},
}  # fmt: skip


def _requests(kinds: list[str]) -> list[RequestRecord]:
    """One request every 10 ms, each of its kind."""
    out = []
    for i, kind in enumerate(kinds):
        t = 100.0 + i * 0.01
        out.append(
            rec(request_id=i, t_sent=t, t_first=t + 0.25, t_last=t + 0.5, t_done=t + 0.5,
                chunk_times=(t + 0.25, t + 0.5), **KINDS[kind])
        )  # fmt: skip
    return out


def _run(
    n_ok: int, n_fallback: int, n_failed: int = 0, kind: str = "fallback"
) -> list[RequestRecord]:
    """Served by the primary, then by the backup, then failed."""
    return _requests(["ok"] * n_ok + [kind] * n_fallback + ["failed"] * n_failed)


def test_fallbacks_are_counted_apart_and_are_errors_only_when_the_policy_says() -> None:
    records = frame(*_run(90, 8, 2))
    plain = analyse(records, 99.0, 102.0, served=ServedRule.of(policy()))
    assert plain.fallbacks == 8
    assert plain.scalars["fallback_rate"] == pytest.approx(0.08)
    assert plain.scalars["error_rate"] == pytest.approx(0.02)
    assert plain.samples["e2el"].size == 98
    assert dict(plain.fallback_backends) == {BACKUP: 8}

    counted = analyse(records, 99.0, 102.0, served=ServedRule.of(policy(True)))
    assert counted.scalars["error_rate"] == pytest.approx(0.10)
    assert (counted.failed, counted.succeeded) == (10, 90)
    assert dict(counted.error_classes) == {"fallback": 8, "http_status": 2}
    assert counted.samples["e2el"].size == 90  # a failure has no latency
    assert counted.scalars["fallback_rate"] == pytest.approx(0.08)


def test_an_unexpected_deployment_counts_only_when_the_scenario_names_the_expected_one() -> None:
    # A retry or a load-balanced group served from the backup without any fallback.
    records = frame(*_run(90, 10, kind="elsewhere"))
    assert analyse(records, 99.0, 102.0).fallbacks == 0
    rule = ServedRule.of(policy(), [PRIMARY + "/"])  # compared as records keep them
    assert analyse(records, 99.0, 102.0, served=rule).fallbacks == 10
    both = ServedRule.of(policy(), [PRIMARY, BACKUP])
    assert analyse(records, 99.0, 102.0, served=both).fallbacks == 0
    # A server that names nothing is the target itself.
    bare = frame(*_requests(["bare"] * 5))
    assert analyse(bare, 99.0, 102.0, served=rule).fallbacks == 0


def test_records_written_before_the_fields_have_no_fallbacks() -> None:
    old = pa.Table.from_pylist([r.to_row() for r in _run(3, 0)], schema=RECORD_SCHEMA)
    old = old.drop_columns(["served_by", "fallbacks", "retries", "served_model"])
    m = analyse(old, 99.0, 102.0, served=ServedRule.of(policy(True), [PRIMARY]))
    assert (m.fallbacks, m.failed) == (0, 0)


def test_expect_backend_is_read_from_a_stored_scenario() -> None:
    assert expected_backends({"target": {"expect_backend": [PRIMARY]}}) == (PRIMARY,)
    assert expected_backends({"target": {"expect_backend": PRIMARY}}) == (PRIMARY,)
    assert expected_backends({"target": {}}) == ()
    assert expected_backends({}) == ()


# --- judging them ------------------------------------------------------------------------


def test_a_fallback_rate_objective_has_error_rate_bounds() -> None:
    obj = Objective.model_validate(FALLBACKS)
    clean = analyse(frame(*_run(3000, 0)), 99.0, 131.0)
    assert judge_objective(obj, clean).verdict is Classification.PASS
    every_tenth = _requests(["fallback" if i % 10 == 0 else "ok" for i in range(1000)])
    leaky = judge_objective(obj, analyse(frame(*every_tenth), 99.0, 111.0))
    assert leaky.verdict is Classification.FAIL
    assert leaky.reason.startswith("fallback_rate 10 % > alert 1 %")
    few = judge_objective(obj, analyse(frame(*_run(100, 0)), 99.0, 102.0))
    assert few.verdict is Classification.INCONCLUSIVE
    assert "requests would decide" in few.reason


def test_a_burst_of_fallbacks_widens_the_bound_as_a_burst_of_errors_does() -> None:
    burst = _run(950, 50)  # every fallback in one stretch of the run
    spread = _requests(["fallback" if i % 20 == 0 else "ok" for i in range(1000)])
    rule = ServedRule.of(policy())
    clustered = analyse(frame(*burst), 99.0, 111.0, served=rule)
    even = analyse(frame(*spread), 99.0, 111.0, served=rule)
    assert clustered.fallbacks == even.fallbacks == 50
    assert clustered.effects["fallback_rate"].inflation(0.95) > even.effects[
        "fallback_rate"
    ].inflation(0.95)


def test_looks_count_fallbacks_as_the_final_verdict_does() -> None:
    records = _run(400, 40, 10)
    rule = ServedRule.of(policy(True), [PRIMARY])
    tallies = LookTallies({}, rule)
    tallies.fold(records, 99.0)
    metrics = analyse(frame(*records), 99.0, 105.0, served=rule)
    for spec in (ERRORS, FALLBACKS):
        obj = Objective.model_validate(spec)
        look = tallies.estimate(obj, 6.0, 0.95)
        assert look.value == pytest.approx(metrics.scalars[obj.metric])
    assert tallies.estimate(Objective.model_validate(ERRORS), 6.0, 0.95).value == pytest.approx(
        50 / 450
    )


@settings(max_examples=60, deadline=None)
@given(
    kinds=st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=60),
    as_error=st.booleans(),
    expect=st.booleans(),
)  # fmt: skip
def test_fallback_counts_follow_the_definition(
    kinds: list[str], as_error: bool, expect: bool
) -> None:
    records = _requests(kinds)
    rule = ServedRule.of(policy(as_error), [PRIMARY] if expect else [])
    m = analyse(frame(*records), 99.0, 102.0, served=rule)
    served_elsewhere = kinds.count("fallback") + (kinds.count("elsewhere") if expect else 0)
    failed = kinds.count("failed")
    assert m.fallbacks == served_elsewhere  # a failed request is an error, not a fallback
    assert m.failed == failed + (served_elsewhere if as_error else 0)
    assert m.scalars["fallback_rate"] == pytest.approx(served_elsewhere / len(kinds))
    assert m.attempted == len(kinds)
    tallies = LookTallies({}, rule)
    tallies.fold(records, 99.0)
    assert int(tallies.fallbacks.sum()) == served_elsewhere
    assert int(tallies.failed.sum()) == m.failed


def test_the_canary_comparison_counts_a_fallback_as_an_error() -> None:
    rule = ServedRule.of(policy(True))
    canary = analyse(frame(*_run(900, 100)), 99.0, 111.0, served=rule)
    baseline = analyse(frame(*_run(1000, 0)), 99.0, 111.0, served=rule)
    result = compare_errors(canary, baseline)
    assert result.canary == pytest.approx(0.1)
    assert result.classification is ShiftClass.HIGH
    blind = analyse(frame(*_run(900, 100)), 99.0, 111.0, served=ServedRule.of(policy()))
    assert compare_errors(blind, baseline).classification is not ShiftClass.HIGH


# --- reports ------------------------------------------------------------------------------


def test_reports_show_fallbacks_only_when_there_were_some() -> None:
    rule = ServedRule.of(policy(True))
    leaky = evaluate(policy(True), analyse(frame(*_run(90, 10)), 99.0, 102.0, served=rule))
    doc = leaky.to_json_dict()["summary"]
    assert doc["fallbacks"] == {"requests": 10, "share": 0.1, "counted_as_errors": True,
                                "served_by": {BACKUP: 10}}  # fmt: skip
    assert doc["error_classes"] == {"fallback": 10}
    assert "fallbacks: 10 requests (10 %) were served by a fallback" in render_markdown(leaky)
    console = Console(record=True, width=200)
    console.print(verdict_renderable(leaky))
    assert f"({BACKUP} 10); counted as errors" in console.export_text()

    clean = evaluate(policy(True), analyse(frame(*_run(100, 0)), 99.0, 102.0, served=rule))
    assert "fallbacks" not in clean.to_json_dict()["summary"]
    assert "fallback" not in render_markdown(clean)
    assert summarise(analyse(frame(*_run(5, 0)), 99.0, 102.0)).fallbacks == 0


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fallback_counts_as_error": "maybe"},
         "p.yaml: fallback_counts_as_error: Input should be a valid boolean"),
        ({"objectives": [FALLBACKS | {"stat": "p99"}]},
         "p.yaml: objectives[0]: Value error, stat 'p99': metric 'fallback_rate' is a single"),
        ({"objectives": [FALLBACKS | {"target": "1%", "alert": "0.1%"}]},
         "p.yaml: objectives[0]: .*alert .* must not be below the target"),
    ],
)  # fmt: skip
def test_a_bad_policy_names_file_key_and_expected(data: dict[str, Any], message: str) -> None:
    doc = {"name": "p", "objectives": [ERRORS]} | data
    with pytest.raises(ConfigError, match=message.replace("[0]", r"\[0\]")):
        validate(Policy, doc, "p.yaml")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("http://gw:4000/v1?api_key=x", "expected an api base such as"),
        ([""], "expected an api base such as"),
        (3, "expected an api base or deployment id, or a list of them"),
    ],
)
def test_a_bad_expect_backend_names_its_key(value: object, message: str) -> None:
    doc = {"name": "s", "load": {"arrival": {"type": "poisson", "rate": 1}, "duration_s": 1},
           "target": {"expect_backend": value}}  # fmt: skip
    with pytest.raises(ConfigError, match=f"s.yaml: target.expect_backend: .*{message}"):
        validate(Scenario, doc, "s.yaml")
    one = validate(Scenario, doc | {"target": {"expect_backend": PRIMARY}}, "s.yaml")
    assert one.target.expect_backend == [PRIMARY]


def test_a_bad_policy_exits_2_naming_its_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(STORED, run_dir)
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"name": "b", "fallback_counts_as_error": "sometimes",
                               "objectives": [ERRORS]}))  # fmt: skip
    with pytest.raises(SystemExit) as done:
        cli.main(["evaluate", str(run_dir), "--policy", str(bad)])
    assert done.value.code == ExitCode.USAGE
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"{bad}: fallback_counts_as_error: Input should be a valid boolean" in err


def test_the_stored_run_has_no_fallbacks_and_keeps_its_error_rate() -> None:
    table = read_table(STORED)
    plain = analyse(table, 0.0, np.inf, served=NO_RULE)
    strict = analyse(table, 0.0, np.inf, served=ServedRule.of(policy(True), [PRIMARY]))
    assert strict.fallbacks == 0
    assert strict.scalars["error_rate"] == plain.scalars["error_rate"]


def test_a_stored_canary_s_fallbacks_reach_the_comparison(tmp_path: Path) -> None:
    baseline, canary = tmp_path / "baseline", tmp_path / "canary"
    shutil.copytree(STORED, baseline)
    shutil.copytree(STORED, canary)
    table = read_table(canary)
    every_third = pa.array([i % 3 == 0 for i in range(table.num_rows)])
    table = table.set_column(
        table.schema.get_field_index("fallbacks"),
        "fallbacks",
        pc.if_else(every_third, 1, 0).cast(pa.int64()),
    )
    pq.write_table(table, canary / "records.parquet")

    def error_row(as_error: bool) -> dict[str, Any]:
        result = compare_runs(canary, baseline, policy(as_error), write=False)
        return next(m for m in result.metrics if m.metric == "error_rate").to_json_dict()

    counted = error_row(True)
    assert counted["canary"] > 0.3 > counted["baseline"]
    assert counted["classification"] == ShiftClass.HIGH.value
    assert error_row(False)["canary"] == counted["baseline"]
