"""The HTML report without a browser: which folder is which, bad paths, escaping, no secrets,
and the numbers behind the CDFs (thinned, yet through the judge's exact percentiles)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from plotly.offline import get_plotlyjs
from support.secrets import key_pieces

from harness import cli
from harness.errors import ExitCode
from harness.flows.evaluate import compare_runs, stored_policy
from harness.judge.analysis import statistic
from harness.report.html import (
    HTML_REPORT,
    link_report,
    render_report,
    report_kind,
    write_report,
    write_report_quietly,
)
from harness.report.page import escape
from harness.report.plots import MAX_CDF_POINTS, cdf_points, window_length
from harness.report.plots_run import load_run
from harness.spec.metrics import percentile_of

DATA = Path(__file__).resolve().parents[1] / "data"
STORED = DATA / "runs/stored-run"
STUDY = DATA / "reports/study.json"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
KEY = "sk-planted-Zq8XwLr3TgVb7NpKd2Hs"


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _write(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc), encoding="utf-8")


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(STORED, run)
    return run


def test_the_kind_is_told_by_the_files(tmp_path: Path) -> None:
    def folder(name: str, *files: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        for f in files:
            (path / f).write_text("{}", encoding="utf-8")
        return path

    assert report_kind(folder("empty")) is None
    assert report_kind(folder("other", "verdict.json", "records.parquet")) is None
    assert report_kind(folder("run", "manifest.json")) == "run"
    assert report_kind(folder("canary", "manifest.json", "comparison.json")) == "comparison"
    assert report_kind(folder("capacity", "capacity.json", "summary.md")) == "capacity"
    assert report_kind(folder("study", "study.json", "capacity.json")) == "study"


def test_a_folder_of_no_kind_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for path in (tmp_path, tmp_path / "missing"):
        with pytest.raises(SystemExit) as done:
            cli.main(["report", str(path)])
        assert done.value.code == ExitCode.USAGE
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert str(path) in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_damaged_document_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "study.json").write_text('{"schema": 1, "trials": [', encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        cli.main(["report", str(tmp_path)])
    assert done.value.code == ExitCode.USAGE
    assert "study.json: unreadable" in capsys.readouterr().err
    _write(tmp_path / "study.json", {"schema": 7, "trials": []})
    with pytest.raises(SystemExit) as done:
        cli.main(["report", str(tmp_path / "study.json")])  # the file means its folder
    assert done.value.code == ExitCode.USAGE
    assert "not a study.json of schema 1" in capsys.readouterr().err


def test_the_run_report_is_one_offline_page(stored: Path) -> None:
    out = write_report(stored)
    assert out == stored / HTML_REPORT
    html = out.read_text(encoding="utf-8")
    assert html.count(get_plotlyjs()[:300]) == 1  # plotly.js inlined once, not per figure
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html.replace(get_plotlyjs(), ""))
    names = re.findall(r'<div class="plot" data-plot="([^"]+)">', html)
    assert html.count("Plotly.newPlot(") == len(names)
    expected = {"cdf-ttft", "cdf-itl", "cdf-e2el", "cdf-tpot", "hist-ttft", "hist-itl", "rate",
                "ttft-window", "requests-waiting", "kv-cache"}  # fmt: skip
    assert set(names) == expected
    assert "errors-window" not in names  # nothing failed: said in a line, not drawn empty
    assert "No request failed in the measured window." in html
    assert "Not collected: GPU utilization, GPU power (no NVIDIA driver" in html
    assert len(html) < 6_000_000


def test_the_cdf_crosses_each_percentile_at_the_verdicts_estimate(stored: Path) -> None:
    run = load_run(stored)
    checked = 0
    for o in _json(stored / "verdict.json")["objectives"]:
        q = percentile_of(o["stat"])
        samples = run.metrics.samples.get(o["metric"])
        if q is None or samples is None or "windows" in o["reason"]:
            continue
        assert statistic(samples, o["stat"]) == pytest.approx(o["estimate"], rel=1e-12)
        x, y = cdf_points(samples, [q / 100])
        assert x[np.flatnonzero(y == q / 100)[0]] == pytest.approx(o["estimate"], rel=1e-12)
        checked += 1
    assert checked >= 1


def test_a_large_cdf_is_thinned_and_keeps_the_exact_quantiles() -> None:
    rng = np.random.default_rng(7)
    samples = rng.lognormal(-3.0, 0.6, 100_000)
    quantiles = [0.5, 0.9, 0.99, 0.999]
    x, y = cdf_points(samples, quantiles)
    assert x.size <= MAX_CDF_POINTS + len(quantiles)
    assert x[0] == samples.min()
    assert x[-1] == samples.max()
    assert np.all(np.diff(x) >= 0)
    assert np.all(np.diff(y) >= 0)
    for q in quantiles:
        exact = np.percentile(samples, q * 100, method="linear")
        assert x[np.flatnonzero(y == q)[0]] == exact
    assert np.count_nonzero(y > 0.999) >= 50  # the tail keeps its detail
    small_x, small_y = cdf_points(np.array([3.0, 1.0, 2.0]))
    assert small_x.tolist() == [1.0, 2.0, 3.0]
    assert small_y.tolist() == [0.0, 0.5, 1.0]


def test_windows_are_few_and_never_nearly_empty() -> None:
    assert window_length(5.0, 33) == 1.0  # five windows of about seven requests
    assert window_length(20.0, 4000) == 0.5
    assert window_length(600.0, 100_000) == 10.0
    assert window_length(86_400.0, 10**7) == 1800.0


def test_hostile_names_are_shown_as_text(stored: Path, tmp_path: Path) -> None:
    manifest = _json(stored / "manifest.json")
    manifest["run_id"] = HOSTILE
    manifest["scenario"]["name"] = HOSTILE
    manifest["notes"] = [HOSTILE]
    _write(stored / "manifest.json", manifest)
    verdict = _json(stored / "verdict.json")
    verdict["policy"] = HOSTILE
    for o in verdict["objectives"]:
        o["name"], o["reason"] = HOSTILE + o["name"], HOSTILE
    _write(stored / "verdict.json", verdict)
    study = _json(STUDY)
    study["study"] = HOSTILE
    study["trials"][0]["params"] = {HOSTILE: HOSTILE}
    study["trials"][5]["log_tail"] = [HOSTILE]
    study["best"]["vllm_serve"] = HOSTILE
    (tmp_path / "study").mkdir()
    _write(tmp_path / "study/study.json", study)
    for html in (render_report(stored, "run"), render_report(tmp_path / "study", "study")):
        page = html.replace(get_plotlyjs(), "")
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # shown as text


def test_no_api_key_reaches_the_report(stored: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    manifest = _json(stored / "manifest.json")
    manifest["target"]["kind"] = "openai"
    manifest["target"]["url"] = f"http://user:{KEY}@127.0.0.1:8000/v1?key={KEY}"
    _write(stored / "manifest.json", manifest)
    html = write_report(stored).read_text(encoding="utf-8").replace(get_plotlyjs(), "")
    assert not key_pieces(html, KEY)
    assert "target http://127.0.0.1:8000/v1 " in html


def test_a_study_with_nulls_and_no_best_still_renders(tmp_path: Path) -> None:
    doc = _json(STUDY)
    for trial in doc["trials"]:
        for key in list(trial):
            if key not in ("number", "params", "status"):
                trial[key] = None
    doc["best"] = None
    doc["pareto"] = []
    _write(tmp_path / "study.json", doc)
    html = render_report(tmp_path, "study")
    assert "data-plot=" not in html
    assert "nothing to plot" in html
    assert "No setting passed the policy" in html
    assert html.count("<tr>") == 1 + len(doc["trials"])


def test_the_fixture_study_shows_the_front_the_best_and_the_failures(tmp_path: Path) -> None:
    shutil.copy(STUDY, tmp_path / "study.json")
    html = write_report(tmp_path).read_text(encoding="utf-8")
    assert 'data-plot="study-pareto"' in html
    assert "vllm serve meta-llama/Llama-3.1-8B-Instruct --max-num-seqs 64" in html
    assert "KV cache too small for max_num_seqs=256 &lt;at 2048 blocks&gt;" in html
    assert "&quot;--max-num-seqs=64&quot;" in html  # the InferenceService patch


def test_a_report_that_fails_is_one_warning_and_the_link_is_added_once(tmp_path: Path) -> None:
    said: list[str] = []
    assert write_report_quietly(tmp_path, said.append, [tmp_path / "summary.md"]) is None
    assert len(said) == 1
    assert said[0].startswith("warning: report.html not written")
    summary = tmp_path / "summary.md"
    summary.write_text("## verdict\n", encoding="utf-8")
    link_report(summary)
    link_report(summary)
    assert summary.read_text(encoding="utf-8") == (
        "## verdict\n\nInteractive report: [report.html](report.html)\n"
    )


def test_evaluate_refreshes_a_report_already_there_and_only_then(
    stored: Path, tmp_path: Path
) -> None:
    untouched = tmp_path / "untouched"
    shutil.copytree(STORED, untouched)
    with pytest.raises(SystemExit) as done:
        cli.main(["evaluate", str(untouched)])
    assert done.value.code == ExitCode.INCONCLUSIVE
    assert not (untouched / HTML_REPORT).exists()  # never asked for: the folder stays as it was
    assert (untouched / "summary.md").read_bytes() == (STORED / "summary.md").read_bytes()
    (stored / HTML_REPORT).write_text("stale", encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        cli.main(["evaluate", str(stored)])
    assert done.value.code == ExitCode.INCONCLUSIVE
    assert 'data-plot="cdf-ttft"' in (stored / HTML_REPORT).read_text(encoding="utf-8")
    assert "Interactive report: [report.html](report.html)" in (stored / "summary.md").read_text(
        encoding="utf-8"
    )


def test_a_comparison_shows_comparison_md_cells_and_survives_a_lost_baseline(
    stored: Path, tmp_path: Path
) -> None:
    baseline = tmp_path / "baseline"
    shutil.copytree(STORED, baseline)
    compare_runs(stored, baseline, stored_policy(stored))
    assert report_kind(stored) == "comparison"
    html = render_report(stored, "comparison")
    assert 'data-plot="compare-cdf-ttft"' in html
    assert 'data-plot="compare-ttft-p99"' in html
    assert 'data-plot="cdf-ttft"' in html  # the canary's own run report follows
    markdown = (stored / "comparison.md").read_text(encoding="utf-8")
    rows = [line.split(" | ") for line in markdown.splitlines() if line.startswith("| ttft")]
    assert rows
    for cell in rows[0][1:-1]:  # the same digits as comparison.md
        assert f">{escape(cell.strip())}<" in html, cell
    shutil.rmtree(baseline)
    html = render_report(stored, "comparison")
    assert "No overlays: the baseline run is not at" in html
    assert "compare-cdf" not in html
