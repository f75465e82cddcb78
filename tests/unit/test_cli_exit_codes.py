"""The exit code is a contract: a bug in the harness exits 70 with one line naming the failure
and where its traceback went (the run folder when there is one), never 1 (FAIL) or any other
verdict's code. The flow is made to raise by replacing one of its steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import cli
from harness.errors import ExitCode, note_run_dir
from harness.flows import evaluate as evaluate_flow

STORED = Path(__file__).resolve().parents[1] / "data/runs/stored-run"


def _boom(*_: object, **__: object) -> None:
    raise ZeroDivisionError("a bug in a step")


def test_an_internal_error_exits_70_with_its_traceback_in_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    monkeypatch.setattr(evaluate_flow, "stored_policy", _boom)
    with pytest.raises(SystemExit) as done:
        cli.main(["evaluate", str(run_dir)])
    assert done.value.code == ExitCode.INTERNAL
    assert int(ExitCode.INTERNAL) == 70
    err = capsys.readouterr().err
    assert "internal error" in err
    assert "ZeroDivisionError: a bug in a step" in err
    assert "Traceback" not in err
    trace = run_dir / "traceback.txt"
    assert str(trace) in err.replace("\n", "")
    assert "ZeroDivisionError" in trace.read_text(encoding="utf-8")


def test_without_a_run_folder_the_traceback_goes_to_a_temporary_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    note_run_dir(tmp_path / "gone")  # noted, then removed: not a folder to write into
    monkeypatch.setattr(evaluate_flow, "judge_run", _boom)
    monkeypatch.setattr(evaluate_flow, "stored_policy", lambda _: None)
    with pytest.raises(SystemExit) as done:
        cli.main(["evaluate", str(STORED)])
    assert done.value.code == 70
    err = capsys.readouterr().err.replace("\n", "")
    where = err.split("traceback in ")[-1].strip()
    assert Path(where).read_text(encoding="utf-8").count("ZeroDivisionError") >= 1
    Path(where).unlink()


def test_the_codes_are_distinct_and_documented() -> None:
    codes = [int(c) for c in ExitCode]
    assert len(codes) == len(set(codes))
    doc = (Path(__file__).resolve().parents[2] / "docs/architecture.md").read_text("utf-8")
    for code in ExitCode:
        assert f"| {int(code)} |" in doc, code
