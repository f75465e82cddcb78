"""Prometheus alerting rules from an SLO policy, so CI gates and production pages share one source.

Each objective with an ``alert`` threshold whose metric a server exposes becomes one alerting
rule that fires when the alert tier is breached over the server's series: the engine's own
histograms (vLLM by default) for the latency rows, its HTTP counter for the error rate, DCGM for
GPU rows, LiteLLM for gateway rows. The comparison's direction comes from the metric
declaration, never from the policy, as the judge does. Everything else is listed, with why, in
the file's header. Pure: this builds the document and its YAML text; the CLI writes it.
``objective_expression`` is the same PromQL for the canary controllers (``report.adapters``),
so an Argo or Flagger check measures what the page measures.

Only the alert tier is translated: a band's low side (GPU utilization under 60 %) is a WARN for
the gate and an efficiency question for capacity planning, not a page, so it gets no rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, NamedTuple

import yaml

from harness.collectors.families import FAMILIES, Family, ServerKind
from harness.collectors.promql import label_matchers, quote
from harness.errors import UsageError
from harness.sim.metrics import ITL_BUCKETS, REQUEST_LATENCY_BUCKETS, TTFT_BUCKETS
from harness.spec.metrics import SHARE_STAT, percentile_of
from harness.spec.policy import Band, Objective, Policy
from harness.spec.quantity import format_quantity

EngineKind = Literal["vllm", "llamacpp"]

#: vLLM's histogram bucket bounds (vLLM's own bounds; the simulator serves the same):
#: a share under a bound is exact only on one of them.
ENGINE_BUCKETS: dict[str, tuple[float, ...]] = {
    "vllm:time_to_first_token_seconds": TTFT_BUCKETS,
    "vllm:inter_token_latency_seconds": ITL_BUCKETS,
    "vllm:request_time_per_output_token_seconds": ITL_BUCKETS,
    "vllm:e2e_request_latency_seconds": REQUEST_LATENCY_BUCKETS,
    "vllm:request_queue_time_seconds": REQUEST_LATENCY_BUCKETS,
}

#: The runbook's own alert names (its Incident Response section), and the GPU row's.
RUNBOOK_LATENCY = "ModelServingHighLatency"
RUNBOOK_ERRORS = "ModelServingHighErrorRate"
GPU_UTILIZATION = "GPUUtilizationHigh"

#: A client-measured metric and the engine's measure of the same thing.
_SERVER_EQUIVALENT = {
    "e2el": "server.e2el",
    "ttft": "server.ttft",
    "itl": "server.itl",
    "tpot": "server.tpot",
    "error_rate": "server.error_rate",
}

#: Error shares: the counter family they are read from (by HTTP status class).
_ERROR_FAMILY = {
    "server.error_rate": "server.http_requests",
    "gateway.error_rate": "gateway.requests",
}

#: Labels the engine puts on its own series; DCGM and LiteLLM series never carry them.
_ENGINE_LABELS = ("model_name", "engine")

_DURATION = re.compile(r"^(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_OVER_TIME = {"mean": "avg", "max": "max", "min": "min"}
_SHOWN: dict[ServerKind, str] = {
    "vllm": "vLLM",
    "llamacpp": "llama.cpp",
    "dcgm": "DCGM",
    "litellm": "LiteLLM",
}


class Skipped(NamedTuple):
    """An objective that got no rule, and why (listed in the rule file's header)."""

    objective: str
    reason: str


class Expression(NamedTuple):
    """An objective's measured value in PromQL, without the comparison."""

    promql: str
    reads: str  # which series, for people: "vLLM vllm:e2e_request_latency_seconds over 5m"


def rules_for(
    policy: Policy,
    *,
    selector: Mapping[str, str] | None = None,
    window: str = "5m",
    for_: str = "5m",
    kind: EngineKind = "vllm",
) -> dict[str, Any]:
    """The Prometheus rule-file document (``groups: [{name, rules}]``) for the policy's alerts.

    ``selector``: label matchers for every series (a value starting with ``=~`` is a regex);
    ``model_name`` and ``engine`` apply to the engine's own series only. ``window`` is the
    range each rate or statistic is taken over, ``for_`` how long a breach must last.
    """
    selector = dict(selector or {})
    check_duration("--window", window, nonzero=True)
    check_duration("--for", for_, nonzero=False)
    for label in selector:
        check_label(label)
    names = _names(policy, kind, selector, window)
    rules: list[dict[str, Any]] = []
    for obj in policy.objectives:
        expr = _expression(obj, kind, selector, window)
        if isinstance(expr, str):
            continue
        assert obj.alert is not None  # _expression skips objectives without one
        op = ">" if obj.judged.better == "lower" else "<"
        name = names[obj.name]
        rules.append(
            {
                "alert": name,
                "expr": f"{expr.promql} {op} {promql_number(obj.alert)}",
                "for": for_,
                "labels": {"severity": "critical" if obj.critical else "warning"},
                "annotations": _annotations(policy, obj, name, expr, for_),
            }
        )
    return {"groups": [{"name": policy.name, "rules": rules}]}


def skipped_objectives(policy: Policy, *, kind: EngineKind = "vllm") -> list[Skipped]:
    """The objectives ``rules_for`` leaves out (whatever its selector and window), and why."""
    out: list[Skipped] = []
    for obj in policy.objectives:
        expr = _expression(obj, kind, {}, "5m")
        if isinstance(expr, str):
            out.append(Skipped(obj.name, expr))
    return out


def render_rules(doc: Mapping[str, Any], skipped: Sequence[Skipped] = ()) -> str:
    """The rule file as YAML, with a header naming its source and the objectives left out."""
    groups = doc.get("groups") or [{}]
    policy = groups[0].get("name", "?")
    lines = [
        f"# Prometheus alerting rules for SLO policy {policy!r}, made by `harness slo rules`.",
        "# The CI gate judges the same policy: change the policy and regenerate, do not edit.",
    ]
    lines += skipped_lines("Not expressible as a server alert", skipped)
    body = yaml.safe_dump(
        dict(doc), sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 16
    )
    return "\n".join(lines) + "\n" + body


def skipped_lines(title: str, skipped: Sequence[Skipped]) -> list[str]:
    """Comment lines naming the objectives left out of a generated file, and why."""
    if not skipped:
        return [f"# {title}: none"]
    return [f"# {title}:", *(f"#   {s.objective}: {s.reason}" for s in skipped)]


def parse_selector(items: Sequence[str]) -> dict[str, str]:
    """``key=value`` (exact) or ``key=~regex`` options as a selector mapping."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--selector {item!r}: expected key=value or key=~regex")
        check_label(key)
        out[key] = "=~" + value[1:] if value.startswith("~") else value
    return out


def objective_expression(
    obj: Objective,
    *,
    selector: Mapping[str, str] | None = None,
    window: str = "5m",
    kind: EngineKind = "vllm",
) -> Expression | str:
    """What the objective's number is in PromQL, or why it has no server-side form, for a
    canary analysis: alert tier or not (it fails an objective without one at its target, as
    the judge does), and an error share is 0, not no data, while requests flow without errors
    (an engine has no 5xx series until its first 5xx; an alert may stay silent, a check may not).

    ``window`` is put in as given (Flagger's ``{{ interval }}`` too): callers check it.
    """
    return _measure(obj, kind, dict(selector or {}), window, zero_errors=True)


def _expression(
    obj: Objective, kind: EngineKind, selector: dict[str, str], window: str
) -> Expression | str:
    """What an alert compares: the objective's PromQL, for objectives with an alert tier."""
    if obj.alert is None:
        return "no alert threshold (the gate fails it at its target; a page needs an alert tier)"
    return _measure(obj, kind, selector, window)


def _measure(
    obj: Objective,
    kind: EngineKind,
    selector: dict[str, str],
    window: str,
    *,
    zero_errors: bool = False,
) -> Expression | str:
    d = obj.definition
    if d.dimension == "per_second":
        return "a throughput: in production it follows the offered load, not the service's health"
    if d.source == "client" and d.name not in _SERVER_EQUIVALENT:
        return "measured by the load generator only; no server exposes it"
    metric = _SERVER_EQUIVALENT.get(d.name, d.name)
    table: ServerKind = (
        "dcgm" if d.source == "gpu" else "litellm" if d.source == "gateway" else kind
    )
    fam = _family(table, _ERROR_FAMILY.get(metric, metric))
    if fam is None:
        return f"{table} exposes no {metric}"
    sel = fam.selector_for(selector)
    if table != kind:
        sel = {k: v for k, v in sel.items() if k not in _ENGINE_LABELS}
    name = fam.names[0]
    matchers = label_matchers(sel, fam.match)
    braces = f"{{{matchers}}}" if matchers else ""
    vector = name + braces
    reads = f"{_SHOWN[table]} {name} over {window}"
    if metric in _ERROR_FAMILY:
        # Not 2xx is a failure, as the judge counts it (vLLM reports classes: "2xx", "5xx").
        status = fam.by[0]
        bad = ",".join(x for x in (matchers, f"{status}!~{quote('2..')}") if x)
        errors = f"sum(rate({name}{{{bad}}}[{window}]))"
        if zero_errors:
            errors = f"({errors} or vector(0))"
        promql = f"{errors} / sum(rate({vector}[{window}]))"
        return Expression(promql, f"share of {_SHOWN[table]} {name} not {status} 2xx over {window}")
    if d.kind == "scalar":
        return "a total over the whole run: its size depends on the run's length, not a window's"
    q = percentile_of(obj.stat)
    if fam.type == "histogram" and obj.stat == SHARE_STAT:
        return _share(obj, fam, matchers, window, reads)
    if fam.type == "histogram":
        if q is not None:
            inner = f"sum by (le) (rate({name}_bucket{braces}[{window}]))"
            return Expression(f"histogram_quantile({promql_number(q / 100)}, {inner})", reads)
        if obj.stat == "mean":
            total, count = (f"sum(rate({name}_{s}{braces}[{window}]))" for s in ("sum", "count"))
            return Expression(f"{total} / {count}", reads)
        return f"the engine's histogram has no {obj.stat}; use a percentile or mean"
    if fam.type != "gauge":
        return f"{table} {name} is a {fam.type}, not a sampled value"
    if fam.combine == "none":
        # One series per GPU, pooled as the judge pools samples; a pooled percentile has no form.
        if q is not None:
            return "a percentile pooled over GPUs and time has no PromQL form; use mean, max or min"
        fn = _OVER_TIME[obj.stat]
        promql = f"{fn}({fn}_over_time({vector}[{window}]))"
    else:
        # The judge combines engines first (sum or max), then takes the stat over time.
        if q is not None:
            promql = (
                f"quantile_over_time({promql_number(q / 100)}, {fam.combine}({vector})[{window}:])"
            )
        elif _OVER_TIME[obj.stat] == fam.combine:
            promql = f"{fam.combine}({fam.combine}_over_time({vector}[{window}]))"
        else:
            promql = f"{_OVER_TIME[obj.stat]}_over_time({fam.combine}({vector})[{window}:])"
    return Expression(promql + _scaled(fam.scale), reads)


def _share(obj: Objective, fam: Family, matchers: str, window: str, reads: str) -> Expression | str:
    """The share of requests at or under the bound, exact when the bound is one of the
    engine's bucket bounds: rate(x_bucket{le="B"}) / rate(x_count)."""
    bounds = ENGINE_BUCKETS.get(fam.names[0])
    assert obj.bound is not None
    if bounds is None or obj.bound not in bounds:
        shown = format_quantity(obj.bound, obj.definition.unit)
        return (
            f"bound {shown} is not one of {fam.names[0]}'s bucket bounds, so the engine's "
            "histogram cannot give the share exactly"
        )
    name = fam.names[0]
    le = f"le={quote(repr(float(obj.bound)))}"  # as prometheus_client writes it: "2.0"
    under = ",".join(x for x in (matchers, le) if x)
    braces = f"{{{matchers}}}" if matchers else ""
    promql = (
        f"sum(rate({name}_bucket{{{under}}}[{window}])) / sum(rate({name}_count{braces}[{window}]))"
    )
    return Expression(promql, reads)


def _family(kind: ServerKind, metric: str) -> Family | None:
    return next((f for f in FAMILIES[kind] if f.metric == metric), None)


def _names(
    policy: Policy, kind: EngineKind, selector: dict[str, str], window: str
) -> dict[str, str]:
    """Alert names: the runbook's where the objective is the runbook's alert, else derived."""
    mapped = [
        o for o in policy.objectives if not isinstance(_expression(o, kind, selector, window), str)
    ]
    wanted: dict[str, str] = {}
    latency = [
        (percentile_of(o.stat) or 0.0, o)
        for o in mapped
        if _SERVER_EQUIVALENT.get(o.metric, o.metric) == "server.e2el" and percentile_of(o.stat)
    ]
    if latency:
        # The runbook's alert is on the P99; failing that, the highest percentile.
        best = max(latency, key=lambda qo: (qo[0] == 99.0, qo[0]))
        wanted[best[1].name] = RUNBOOK_LATENCY
    for metrics, alert in (
        (("error_rate", "server.error_rate"), RUNBOOK_ERRORS),
        (("gpu.utilization",), GPU_UTILIZATION),
    ):
        first = next((o for o in mapped if o.metric in metrics), None)
        if first is not None:
            wanted[first.name] = alert
    taken = set(wanted.values())
    names: dict[str, str] = {}
    for obj in mapped:
        if obj.name in wanted:
            names[obj.name] = wanted[obj.name]
            continue
        base = "Slo" + "".join(p[:1].upper() + p[1:] for p in re.split(r"[^a-zA-Z0-9]+", obj.name))
        name, n = base + "Breached", 2
        while name in taken:
            name, n = f"{base}Breached{n}", n + 1
        taken.add(name)
        names[obj.name] = name
    return names


def _annotations(
    policy: Policy, obj: Objective, name: str, expr: Expression, for_: str
) -> dict[str, str]:
    """Static text (no $value): on-call reads which policy row fired and its numbers."""
    d = obj.judged  # a share_under objective is a ratio, higher is better
    alert = format_quantity(obj.alert, d.unit)
    if isinstance(obj.target, Band):
        low, high = (format_quantity(x, d.unit) for x in (obj.target.min, obj.target.max))
        target = f"{low} to {high}"
    else:
        target = format_quantity(obj.target, d.unit)
    what = (
        f"share of {d.name}" if obj.stat == SHARE_STAT
        else d.name if obj.stat == "value" else f"{d.name} {obj.stat}"
    )  # fmt: skip
    side = "above" if d.better == "lower" else "below"
    level = "critical" if obj.critical else "advisory"
    runbook = f" Runbook alert: {name}." if name in (RUNBOOK_LATENCY, RUNBOOK_ERRORS) else ""
    return {
        "summary": f"{obj.name}: {what} {side} {alert} (SLO policy {policy.name})",
        "description": (
            f"SLO policy {policy.name}, objective {obj.name} ({level}): {what} "
            f"({expr.reads}) has been {side} the alert threshold {alert} for {for_} "
            f"(target {target}).{runbook}"
        ),
    }


def _scaled(scale: float) -> str:
    """The PromQL that brings a series to the base unit (DCGM reports percent: ``/ 100``)."""
    if scale == 1.0:
        return ""
    if scale < 1.0:
        return f" / {promql_number(1.0 / scale)}"
    return f" * {promql_number(scale)}"


def promql_number(value: float) -> str:
    """A PromQL number literal, without float noise (0.999, not 0.9990000000000001)."""
    return f"{value:.12g}"


def check_duration(option: str, value: str, *, nonzero: bool) -> None:
    if not value or not _DURATION.match(value) or (nonzero and not re.search(r"[1-9]", value)):
        raise UsageError(f"{option} {value!r}: expected a Prometheus duration such as 5m or 90s")


def check_label(label: str) -> None:
    if not _LABEL.match(label):
        raise UsageError(f"selector label {label!r}: expected a Prometheus label name")
