"""A tuning study's report (study.json, written by `harness tune`): every setting measured,
the throughput/latency Pareto front against the policy's latency target, the launches that
failed with the end of their logs, and the best passing setting as a command line and a patch.

study.json is read as JSON (schema 1), not through the tune stage: the report only shows what
the study wrote, and any trial field but its number, params and status may be null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from harness.report.page import Cell, Page, badge, escape, label, num, pretty_json, raw
from harness.report.plots import COLORS, base_layout, finite, read_document, time_scale

_STUDY_JSON = "study.json"
_SCHEMA = 1
#: Verdicts a setting may be chosen with (every critical objective PASSes, as the study's
#: best setting requires).
_PASSING = ("PASS",)
_FAILED = ("launch_failed", "error")


def study_path(folder: Path) -> Path:
    """Where a study folder keeps study.json."""
    return folder / _STUDY_JSON


def read_study(folder: Path) -> dict[str, Any]:
    """study.json, refusing a damaged one or a schema this version does not know."""
    return read_document(study_path(folder), _SCHEMA, "trials",
                         lambda t: type(t.get("number")) is int
                         and isinstance(t.get("params"), dict))  # fmt: skip


def study_page(folder: Path) -> Page:
    doc = read_study(folder)
    trials: list[dict[str, Any]] = doc["trials"]
    name = str(doc.get("study", folder.name))
    best = doc.get("best") if isinstance(doc.get("best"), dict) else None
    page = Page(f"Tuning study {name}")
    page.heading(f"Tuning study: {name}", 1,
                 badge("best found" if best else "no passing setting",
                       like="PASS" if best else "INCONCLUSIVE", big=True))  # fmt: skip
    counts: dict[str, int] = {}
    for t in trials:
        counts[str(t.get("status"))] = counts.get(str(t.get("status")), 0) + 1
    page.text(" · ".join([
        f"scenario {doc.get('scenario')}", f"policy {doc.get('policy')}",
        f"launcher {doc.get('launcher')}", f"measure {doc.get('measure')}",
        f"sampler {doc.get('sampler')}",
        f"{len(trials)} settings: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
    ]), "meta")  # fmt: skip
    _best(page, doc, best)
    fig = pareto_figure(doc, trials)
    page.heading("Throughput against latency")
    if fig is None:
        page.text("No setting was measured with both a throughput and a latency: nothing to "
                  "plot.", "note")  # fmt: skip
    else:
        page.figure("study-pareto", fig, wide=True)
    trials_table(page, doc, trials)
    _failures(page, trials)
    return page


def _axes(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    throughput, latency = doc.get("throughput"), doc.get("latency")
    return (
        dict(throughput) if isinstance(throughput, dict) else {},
        dict(latency) if isinstance(latency, dict) else {},
    )


def _best(page: Page, doc: Mapping[str, Any], best: Mapping[str, Any] | None) -> None:
    page.heading("Best setting")
    if doc.get("best_reason"):
        page.text(str(doc["best_reason"]))
    if best is None:
        page.text("No setting passed the policy: no command line to recommend.", "note")
        return
    params = best.get("params") or {}
    page.table(("trial", *params), [[num(str(best.get("number"))),
                                     *(num(_value(v)) for v in params.values())]])  # fmt: skip
    if best.get("vllm_serve"):
        page.text("vllm serve:")
        page.pre(str(best["vllm_serve"]))
    if best.get("isvc_patch"):
        page.text("InferenceService patch:")
        page.pre(pretty_json(best["isvc_patch"]))


def pareto_figure(doc: Mapping[str, Any], trials: Sequence[Mapping[str, Any]]) -> go.Figure | None:
    """Every measured setting at (throughput, latency), coloured by whether it passed; the
    front joined and ringed; the latency target as a line; the best as a star."""
    points = [t for t in trials if finite([t.get("throughput")]) and finite([t.get("latency")])]
    if not points:
        return None
    throughput, latency = _axes(doc)
    target = latency.get("target")
    unit = str(latency.get("unit") or "")
    scale, shown = (1.0, unit)
    if unit == "s":
        scale, shown = time_scale(max(finite([t.get("latency") for t in points] + [target])))
    front_numbers = set(doc.get("pareto") or []) | {t["number"] for t in points if t.get("pareto")}
    best = doc.get("best") if isinstance(doc.get("best"), dict) else None
    fig = go.Figure()
    for passing, colour, name in ((True, COLORS["good"], "passes the policy"),
                                  (False, COLORS["bad"], "does not pass")):  # fmt: skip
        group = [t for t in points if (t.get("verdict") in _PASSING) is passing]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[t["throughput"] for t in group], y=[t["latency"] * scale for t in group],
            mode="markers", name=name, marker={"size": 9, "color": colour, "opacity": 0.8},
            customdata=[_hover(t) for t in group],
            hovertemplate="%{customdata}<extra></extra>",
        ))  # fmt: skip
    front = sorted(
        (t for t in points if t["number"] in front_numbers), key=lambda t: t["throughput"]
    )
    if front:
        fig.add_trace(go.Scatter(
            x=[t["throughput"] for t in front], y=[t["latency"] * scale for t in front],
            mode="lines+markers", name="Pareto front",
            line={"color": COLORS["main"], "width": 2, "shape": "vh"},  # the dominated region
            marker={"size": 15, "color": "rgba(0,0,0,0)", "line": {"color": COLORS["main"],
                                                                   "width": 2}},
            customdata=[_hover(t) for t in front], hovertemplate="%{customdata}<extra></extra>",
        ))  # fmt: skip
    chosen = [t for t in points if best is not None and t["number"] == best.get("number")]
    if chosen:
        fig.add_trace(go.Scatter(
            x=[chosen[0]["throughput"]], y=[chosen[0]["latency"] * scale], mode="markers",
            name="best", marker={"size": 18, "symbol": "star", "color": "#d4a72c"},
            customdata=[_hover(chosen[0])], hovertemplate="%{customdata}<extra></extra>",
        ))  # fmt: skip
    if isinstance(target, int | float):
        fig.add_hline(y=target * scale, line={"color": COLORS["alert"], "dash": "dash"},
                      annotation_text=f"target {target * scale:.4g} {label(shown)}",
                      annotation_position="top left")  # fmt: skip
    x_title = f"{throughput.get('metric', 'throughput')} ({throughput.get('unit', '')})"
    y_title = f"{latency.get('stat', '')} {latency.get('metric', 'latency')} ({shown})"
    fig.update_layout(base_layout(f"Pareto front: {label(latency.get('objective', 'latency'))}",
                                  label(x_title), label(y_title), height=440))  # fmt: skip
    return fig


def _hover(trial: Mapping[str, Any]) -> str:
    params = ", ".join(f"{k}={_value(v)}" for k, v in (trial.get("params") or {}).items())
    return label(f"trial {trial['number']}: {params} ({trial.get('verdict')})")


def trials_table(page: Page, doc: Mapping[str, Any], trials: Sequence[Mapping[str, Any]]) -> None:
    """One row per setting: its parameters, status, verdict and the numbers it measured."""
    page.heading("Every setting")
    throughput, latency = _axes(doc)
    names = list(dict.fromkeys(k for t in trials for k in t.get("params") or {}))
    latency_head = f"{latency.get('stat', '')} {latency.get('metric', 'latency')}".strip()
    columns = ["#", *names, "status", "verdict", f"throughput ({throughput.get('unit', '')})",
               latency_head, "req/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "E2EL p50",
               "E2EL p99", "front", "run"]  # fmt: skip
    front = set(doc.get("pareto") or [])
    rows: list[list[Cell | str]] = []
    for t in sorted(trials, key=lambda t: t["number"]):
        params = t.get("params") or {}
        run: Cell | str = ""
        if isinstance(t.get("run_dir"), str) and t["run_dir"]:
            run = raw(f'<a href="{escape(t["run_dir"])}">{escape(t["run_dir"])}</a>')
        verdict = t.get("verdict")
        rows.append([
            num(str(t["number"])), *(num(_value(params.get(n))) for n in names),
            raw(badge(str(t.get("status")))), raw(badge(str(verdict))) if verdict else "—",
            num(_g(t.get("throughput"))), num(_latency(t.get("latency"), latency.get("unit"))),
            num(_g(t.get("request_rate"))),
            *(num(_latency(t.get(f"{m}_{s}_s"), "s")) for m in ("ttft", "itl", "e2el")
              for s in ("p50", "p99")),
            "★" if t.get("pareto") or t["number"] in front else "", run,
        ])  # fmt: skip
    page.table(columns, rows)
    notes = [(t["number"], n) for t in trials for n in t.get("notes") or []]
    for number, note in notes:
        page.text(f"trial {number}: {note}", "note")


def _failures(page: Page, trials: Sequence[Mapping[str, Any]]) -> None:
    failed = [t for t in trials if t.get("status") in _FAILED]
    if not failed:
        return
    page.heading("Settings that failed")
    for t in failed:
        params = ", ".join(f"{k}={_value(v)}" for k, v in (t.get("params") or {}).items())
        page.heading(f"trial {t['number']}: {params}", 3, badge(str(t.get("status"))))
        tail = t.get("log_tail") or []
        if tail:
            page.pre("\n".join(str(line) for line in tail))
        else:
            page.text("No log kept.", "note")


def _value(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"  # as in the study file
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _g(value: object) -> str:
    return f"{value:,.4g}" if isinstance(value, int | float) else "—"


def _latency(value: object, unit: object) -> str:
    if not isinstance(value, int | float):
        return "—"
    if unit == "s":
        scale, shown = time_scale(float(value))
        return f"{value * scale:.4g} {shown}"
    return f"{value:.4g}{f' {unit}' if unit else ''}"
