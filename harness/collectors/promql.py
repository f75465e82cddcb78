"""The PromQL the harness sends: one range query per family, built from its declaration.

Each query returns what ``snapshot.snapshot_from_samples`` computes from a ``/metrics`` page
(raw cumulative counters and bucket counts, combined across pods with sum or max), so
deltas, rates and shares are computed the same way in both modes (the PromQL a person would
write for alerts, ``rate(x_bucket{le="T"}) / rate(x_count)`` and the like, is in
harness.report.alertrules). Golden files under tests/data/promql pin the text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.collectors.families import GPU_LABELS, Family


def quote(value: str) -> str:
    """A PromQL string literal (Go string escapes: backslash, quote, newline)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


def label_matchers(selector: Mapping[str, str], extra: Sequence[tuple[str, str]] = ()) -> str:
    """``a="x",b=~"y.*"`` from a selector (``=~`` prefix: regex) and a family's regexes."""
    parts: list[str] = []
    for label, value in sorted(selector.items()):
        if value.startswith("=~"):
            parts.append(f"{label}=~{quote(value[2:])}")
        else:
            parts.append(f"{label}={quote(value)}")
    parts += [f"{label}=~{quote(rx)}" for label, rx in extra]
    return ",".join(parts)


def _name_regex(fam: Family) -> str:
    names = "|".join(fam.names)
    if fam.type == "histogram":
        return f"({names})_(bucket|sum|count)"
    return f"({names})" if len(fam.names) > 1 else names


def family_query(fam: Family, selector: Mapping[str, str]) -> str:
    """The range query for one family: its raw series, combined as the family says."""
    matchers = label_matchers(fam.selector_for(selector), fam.match)
    vector = "{" + ",".join(x for x in (f"__name__=~{quote(_name_regex(fam))}", matchers) if x)
    vector += "}"
    if fam.type == "histogram":
        return f"sum by (__name__, le) ({vector})"
    if fam.combine == "none":
        keep = ", ".join(("__name__", *GPU_LABELS))
        return f"max by ({keep}) ({vector})"
    op = "max" if fam.combine == "max" else "sum"
    keep = ", ".join(("__name__", *fam.by))
    return f"{op} by ({keep}) ({vector})"
