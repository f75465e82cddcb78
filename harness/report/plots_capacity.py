"""A capacity search's report: how latency and throughput grew with the load, where the
search found the edge, what the server showed at each probe, and the fleet plan.

capacity.json (``harness.capacity.document``) lists every probe with its run folder; the
binding objective's estimate and interval at each probe come from that probe's verdict.json,
the numbers the search itself read.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from harness.capacity.document import CAPACITY_SCHEMA
from harness.capacity.probe import SERVER_STATE
from harness.report.files import VERDICT_FILE
from harness.report.page import Cell, Page, badge, escape, label, num, pretty_json, raw
from harness.report.plots import COLORS, base_layout, finite, read_document, time_scale
from harness.report.plots_run import stored_verdict
from harness.spec.quantity import format_quantity

_CAPACITY_JSON = "capacity.json"
_HELD_COLOUR = {True: COLORS["good"], False: COLORS["bad"], None: COLORS["unsure"]}
_HELD_TEXT = {True: "held", False: "not held", None: "undecided"}
#: Server state plotted per probe: figure name, metric, y-axis title, scale.
_PROBE_STATE = (
    ("capacity-waiting", "server.queue_waiting", "requests", 1.0),
    ("capacity-kv-cache", "server.kv_cache_usage", "%", 100.0),
    ("capacity-gpu", "gpu.utilization", "%", 100.0),
)


def capacity_path(folder: Path) -> Path:
    """Where a capacity search's folder keeps capacity.json (harness.flows.capacity)."""
    return folder / _CAPACITY_JSON


def read_capacity(folder: Path) -> dict[str, Any]:
    """capacity.json, refusing a damaged one or a schema this version does not know."""
    return read_document(capacity_path(folder), CAPACITY_SCHEMA, "probes",
                         lambda p: isinstance(p.get("level"), int | float))  # fmt: skip


def probe_folder(folder: Path, run_dir: object) -> Path | None:
    """A probe's run folder: as recorded (relative to where the search ran), else found
    inside the capacity folder by its last two or one parts (the search folder moved)."""
    if not isinstance(run_dir, str) or not run_dir:
        return None
    path = Path(run_dir)
    for candidate in (path, folder.joinpath(*path.parts[-2:]), folder / path.name):
        if (candidate / VERDICT_FILE).is_file():
            return candidate
    return None


def capacity_page(folder: Path) -> Page:
    doc = read_capacity(folder)
    probes: list[dict[str, Any]] = doc["probes"]
    verdicts = []
    lost = []
    for i, p in enumerate(probes, 1):
        where = probe_folder(folder, p.get("run_dir"))
        verdicts.append(stored_verdict(where) if where is not None else None)
        if where is None:
            lost.append(f"probe {i} ({p.get('run_dir')})")
    unit = str(doc.get("unit", ""))
    page = Page(f"Capacity {doc.get('scenario')}: {doc.get('outcome')}")
    page.heading(f"Capacity: {doc.get('scenario')}", 1, badge(str(doc.get("outcome")), big=True))
    page.text(str(doc.get("reason", "")))
    spent = doc.get("spent") or {}
    page.text(f"policy {doc.get('policy')} · load in {unit} · tolerance "
              f"{float(doc.get('tolerance') or 0):.0%} · {spent.get('probes', len(probes))} "
              f"probes, {spent.get('requests', 0):,} requests, {spent.get('measured_s', 0):g} s "
              "measured", "meta")  # fmt: skip
    _answer(page, doc, unit)
    if lost:
        page.text("Run folders not found (their verdicts are not plotted): " + ", ".join(lost),
                  "note")  # fmt: skip
    page.heading("Load against latency and throughput")
    latency = latency_figure(doc, probes, verdicts)
    if latency is not None:
        page.figure("capacity-latency", latency)
    if finite(p.get("pressure") for p in probes):
        page.figure("capacity-pressure", pressure_figure(doc, probes))
    page.figure("capacity-throughput", throughput_figure(doc, probes))
    _server(page, doc, probes)
    _plan(page, doc)
    probes_table(page, folder, probes, unit)
    return page


def _answer(page: Page, doc: Mapping[str, Any], unit: str) -> None:
    cap = doc.get("capacity") or {}
    level, bracket = cap.get("level"), cap.get("bracket") or [None, None]
    if level is not None:
        upper = "not reached" if bracket[1] is None else f"{bracket[1]:g}"
        page.text(f"Highest load held: {level:g} {unit} (bracket {level:g} – {upper}); there "
                  f"{format_quantity(cap.get('request_rate'), '1/s')} req, "
                  f"{format_quantity(cap.get('output_token_rate'), '1/s')} output tokens, "
                  f"goodput {format_quantity(cap.get('goodput'), '1/s')}.")  # fmt: skip
    binding = doc.get("binding_constraint")
    if isinstance(binding, dict):
        page.text(f"Breaks first at {_g(binding.get('at_level'))} {unit}: "
                  + "; ".join(str(o) for o in binding.get("objectives") or []))  # fmt: skip
        for sign in binding.get("signs") or []:
            page.text(f"• {sign}", "note")


def binding_objective(
    doc: Mapping[str, Any], verdicts: Sequence[Mapping[str, Any] | None]
) -> str | None:
    """The latency objective that binds: the first latency objective capacity.json names as
    breaking, else the critical latency objective closest to its target at the highest load."""
    latency = {str(o["name"]) for v in verdicts if v for o in v.get("objectives") or []
               if o.get("unit") == "s" and o.get("critical")}  # fmt: skip
    binding = doc.get("binding_constraint") or {}
    for said in binding.get("objectives") or []:
        name = str(said).split(": ", 1)[0]
        if name in latency:
            return name
    judged = [(p_level, v) for p_level, v in zip((p.get("level") for p in doc["probes"]),
                                                 verdicts, strict=True) if v]  # fmt: skip
    if not judged:
        return None
    top = max(judged, key=lambda lv: float(lv[0] or 0))[1]
    best: tuple[float, str] | None = None
    for o in top.get("objectives") or []:
        target, estimate = o.get("target"), o.get("estimate")
        if str(o.get("name")) in latency and isinstance(target, int | float) and target > 0 \
                and isinstance(estimate, int | float):  # fmt: skip
            ratio = float(estimate) / float(target)
            best = max(best or (ratio, str(o["name"])), (ratio, str(o["name"])))
    return best[1] if best else None


def latency_figure(
    doc: Mapping[str, Any],
    probes: Sequence[Mapping[str, Any]],
    verdicts: Sequence[Mapping[str, Any] | None],
) -> go.Figure | None:
    """The binding latency objective's estimate (with its bounds) at each probe's load, the
    target, and the capacity found with its bracket; None without a latency objective."""
    name = binding_objective(doc, verdicts)
    if name is None:
        return None
    points = []
    for p, v in zip(probes, verdicts, strict=True):
        found = [o for o in (v or {}).get("objectives") or [] if o.get("name") == name]
        if found and isinstance(found[0].get("estimate"), int | float):
            points.append((p, found[0]))
    if not points:
        return None
    points.sort(key=lambda po: float(po[0]["level"]))  # probes run out of order: by load
    objective = points[0][1]
    target, alert = objective.get("target"), objective.get("alert")
    values = finite([o["estimate"] for _, o in points] + [target if isinstance(target, float | int)
                                                           else None])  # fmt: skip
    scale, unit = time_scale(max(values))
    ys = [float(o["estimate"]) * scale for _, o in points]
    up = [_side(o, 1, scale, y) for (_, o), y in zip(points, ys, strict=True)]
    down = [_side(o, 0, scale, y) for (_, o), y in zip(points, ys, strict=True)]
    fig = go.Figure(go.Scatter(
        x=[p["level"] for p, _ in points], y=ys, mode="lines+markers", name=label(name),
        line={"color": COLORS["main"]},
        marker={"size": 10, "color": [_HELD_COLOUR[p.get("passed")] for p, _ in points]},
        error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down},
        customdata=[f"{p.get('decision')}, {_HELD_TEXT[p.get('passed')]}" for p, _ in points],
        hovertemplate=f"%{{x:g}}: %{{y:.4g}} {unit} (%{{customdata}})<extra></extra>",
    ))  # fmt: skip
    if isinstance(target, int | float):
        fig.add_hline(y=target * scale, line={"color": COLORS["target"], "dash": "dash"},
                      annotation_text=f"target {target * scale:.4g} {unit}",
                      annotation_position="top left")  # fmt: skip
    if isinstance(alert, int | float):
        fig.add_hline(y=alert * scale, line={"color": COLORS["alert"], "dash": "dot"},
                      annotation_text=f"alert {alert * scale:.4g} {unit}",
                      annotation_position="top left")  # fmt: skip
    _mark_capacity(fig, doc)
    stat = f"{objective.get('stat')} {objective.get('metric')}"
    title = f"{label(name)}: {label(stat)} against load (bars: bounds)"
    fig.update_layout(base_layout(title, f"load ({label(doc.get('unit'))})",
                                  f"{label(stat)} ({unit})"))  # fmt: skip
    return fig


def _side(objective: Mapping[str, Any], i: int, scale: float, y: float) -> float:
    """How far an interval side lies from the estimate (0 when that side is open)."""
    interval = objective.get("interval")
    if not isinstance(interval, list) or len(interval) != 2 or interval[i] is None:
        return 0.0
    return abs(float(interval[i]) * scale - y)


def _mark_capacity(fig: go.Figure, doc: Mapping[str, Any]) -> None:
    """The bracket shaded and the capacity found as a vertical line."""
    cap = doc.get("capacity") or {}
    lo, hi = (cap.get("bracket") or [None, None])[:2]
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        fig.add_vrect(x0=lo, x1=hi, fillcolor=COLORS["muted"], opacity=0.18, line_width=0,
                      annotation_text="bracket", annotation_position="top left")  # fmt: skip
    if isinstance(cap.get("level"), int | float):
        fig.add_vline(x=cap["level"], line={"color": COLORS["good"], "width": 2},
                      annotation_text=f"capacity {cap['level']:g}",
                      annotation_position="bottom right")  # fmt: skip


def pressure_figure(doc: Mapping[str, Any], probes: Sequence[Mapping[str, Any]]) -> go.Figure:
    """The pressure the search interpolates on (the binding objective's estimate over its
    target, the worst critical one): 1 is the edge."""
    points = sorted((p for p in probes if finite([p.get("pressure")])),
                    key=lambda p: float(p["level"]))  # fmt: skip
    fig = go.Figure(go.Scatter(
        x=[p["level"] for p in points], y=[p["pressure"] for p in points], mode="lines+markers",
        name="pressure", line={"color": COLORS["muted"], "width": 1},
        marker={"size": 10, "color": [_HELD_COLOUR[p.get("passed")] for p in points]},
        hovertemplate="%{x:g}: pressure %{y:.3g}<extra></extra>",
    ))  # fmt: skip
    fig.add_hline(
        y=1.0,
        line={"color": COLORS["alert"], "dash": "dash"},
        annotation_text="at the target",
        annotation_position="top left",
    )
    _mark_capacity(fig, doc)
    fig.update_layout(base_layout("Pressure: worst critical estimate / target",
                                  f"load ({label(doc.get('unit'))})", "pressure"))  # fmt: skip
    return fig


def throughput_figure(doc: Mapping[str, Any], probes: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Completed requests and goodput per second (left) and output tokens per second (right)
    at each probe's load; with a rate load, the offered rate for comparison."""
    ordered = sorted(probes, key=lambda p: float(p.get("level") or 0))
    xs = [p.get("level") for p in ordered]
    fig = go.Figure()
    rates = (("request_rate", "completed req/s", COLORS["main"], "solid"),
             ("goodput", "goodput req/s", COLORS["third"], "dash"))  # fmt: skip
    for key, name, colour, dash in rates:
        fig.add_trace(go.Scatter(x=xs, y=[p.get(key) for p in ordered], mode="lines+markers",
                                 name=name, line={"color": colour, "dash": dash}))  # fmt: skip
    fig.add_trace(go.Scatter(x=xs, y=[p.get("output_token_rate") for p in ordered],
                             mode="lines+markers", name="output tokens/s", yaxis="y2",
                             line={"color": COLORS["second"], "dash": "dot"}))  # fmt: skip
    if doc.get("unit") == "req/s" and xs:
        fig.add_trace(go.Scatter(x=xs, y=xs, mode="lines", name="offered req/s",
                                 line={"color": COLORS["muted"], "dash": "dash"}))  # fmt: skip
    _mark_capacity(fig, doc)
    layout = base_layout("Throughput and goodput against load", f"load ({label(doc.get('unit'))})",
                         "requests/s")  # fmt: skip
    layout["yaxis"]["rangemode"] = "tozero"  # a plateau reads as one, not as a cliff
    layout["yaxis2"] = {"title": {"text": "output tokens/s"}, "overlaying": "y", "side": "right",
                        "showgrid": False, "rangemode": "tozero"}  # fmt: skip
    layout["margin"]["r"] = 60
    fig.update_layout(layout)
    return fig


def _server(page: Page, doc: Mapping[str, Any], probes: Sequence[Mapping[str, Any]]) -> None:
    """Requests waiting, KV-cache usage and GPU utilization per probe (mean and max over its
    measured window), each only where some probe collected it."""
    page.heading("Server state per probe")
    shown = []
    for name, metric, y_title, scale in _PROBE_STATE:
        have = [p for p in probes if isinstance((p.get("server") or {}).get(metric), dict)]
        if not have:
            continue
        shown.append(metric)
        have.sort(key=lambda p: float(p.get("level") or 0))
        fig = go.Figure()
        for stat, dash in (("mean", "solid"), ("max", "dot")):
            fig.add_trace(go.Scatter(
                x=[p["level"] for p in have],
                y=[(p["server"][metric].get(stat) or 0.0) * scale for p in have],
                mode="lines+markers", name=stat, line={"dash": dash},
            ))  # fmt: skip
        _mark_capacity(fig, doc)
        layout = base_layout(f"{SERVER_STATE[metric]} per probe",
                             f"load ({label(doc.get('unit'))})", y_title)  # fmt: skip
        layout["yaxis"]["rangemode"] = "tozero"
        fig.update_layout(layout)
        page.figure(name, fig)
    missing = [SERVER_STATE[m] for _, m, _, _ in _PROBE_STATE if m not in shown]
    if missing:
        page.text(f"Not collected at any probe: {', '.join(missing)} (see each probe's "
                  "summary.md for why).", "note")  # fmt: skip


def _plan(page: Page, doc: Mapping[str, Any]) -> None:
    page.heading("Plan")
    plan = doc.get("plan")
    rows: list[list[Cell | str]] = []
    if isinstance(plan, dict):
        predictor = ((plan.get("inference_service_patch") or {}).get("spec") or {}).get(
            "predictor") or {}  # fmt: skip
        rows += [
            ["peak", format_quantity(plan.get("peak_rps"), "1/s")],
            ["headroom", format_quantity(plan.get("headroom"), "ratio")],
            ["each replica planned at", format_quantity(plan.get("per_replica_rps"), "1/s")],
            ["replicas (min – max)", f"{plan.get('min_replicas')} – {plan.get('max_replicas')}"],
            ["autoscaling", f"scaleMetric {predictor.get('scaleMetric')}, scaleTarget "
                            f"{predictor.get('scaleTarget')}"],
            ["KEDA hint", str(plan.get("keda_hint", ""))],
            ["why not the CPU HPA", str(plan.get("why_not_cpu", ""))],
        ]  # fmt: skip
    cost, energy = doc.get("cost_per_1k_output_tokens"), doc.get("energy_j_per_1k_output_tokens")
    if cost is not None:
        rows.append(["cost per 1 000 output tokens", f"{cost:.4g}"])
    if energy is not None:
        rows.append(["energy per 1 000 output tokens", f"{energy:.4g} J"])
    if rows:
        page.table(("plan", "value"), rows)
    else:
        page.text("No plan: give --peak-rps (replicas), --gpu-hour-price (cost).", "note")
    if isinstance(plan, dict) and plan.get("inference_service_patch"):
        page.text("InferenceService patch:")
        page.pre(pretty_json(plan["inference_service_patch"]))


def probes_table(page: Page, folder: Path, probes: Sequence[Mapping[str, Any]], unit: str) -> None:
    page.heading("Probes")
    rows: list[list[Cell | str]] = []
    for i, p in enumerate(probes, 1):
        where = probe_folder(folder, p.get("run_dir"))
        link: Cell | str = str(p.get("run_dir", ""))
        if where is not None:
            rel = os.path.relpath(where.resolve(), folder.resolve())
            href = Path(rel, "summary.md").as_posix()
            link = raw(f'<a href="{escape(href)}">{escape(Path(rel).as_posix())}</a>')
        rows.append([num(str(i)), num(f"{p.get('level'):g}"), raw(badge(str(p.get("decision")))),
                     _HELD_TEXT[p.get("passed")], num(_g(p.get("pressure"))),
                     num(format_quantity(p.get("request_rate"), "1/s")),
                     num(format_quantity(p.get("output_token_rate"), "1/s")),
                     num(format_quantity(p.get("goodput"), "1/s")),
                     num(f"{p.get('requests', 0):,}"), num(f"{p.get('duration_s') or 0:.3g} s"),
                     link])  # fmt: skip
    page.table(("#", f"load ({unit})", "verdict", "held", "pressure", "req/s", "tokens/s",
                "goodput", "requests", "measured", "run"), rows)  # fmt: skip


def _g(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else "—"
