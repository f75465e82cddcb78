"""Verdict types: what the judge returns and verdict.json holds (its top level is a contract,
docs/architecture.md)."""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

VERDICT_SCHEMA = 1


class Classification(enum.StrEnum):
    """Per objective."""

    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


class Decision(enum.StrEnum):
    """For the whole run; INVALID when the run itself cannot be judged."""

    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    INVALID = "INVALID"


@dataclass(frozen=True, slots=True)
class ObjectiveResult:
    """One objective judged: the numbers and the reason, so a person can check it."""

    name: str
    metric: str
    stat: str
    estimate: float | None
    unit: str
    interval: tuple[float, float] | None  # confidence interval; None until the judge has one
    n: int  # samples behind the estimate
    verdict: Classification
    reason: str
    critical: bool
    target: float | tuple[float, float]  # a bound, or a (min, max) band
    alert: float | None


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """mean / p50 / p90 / p99 of one latency metric, seconds; None without samples."""

    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    n: int = 0


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The headline numbers of a run's measured window (warm-up excluded)."""

    requests: int  # attempted in the measured window
    errors: int
    error_classes: dict[str, int]
    duration_s: float | None
    request_rate: float | None  # successful completions per second
    output_token_rate: float | None
    goodput: float | None
    ttft_s: LatencyStats = field(default_factory=LatencyStats)
    tpot_s: LatencyStats = field(default_factory=LatencyStats)
    itl_s: LatencyStats = field(default_factory=LatencyStats)
    e2el_s: LatencyStats = field(default_factory=LatencyStats)
    schedule_lag_s: LatencyStats = field(default_factory=LatencyStats)
    prompt_tokens_mean: float | None = None
    output_tokens_mean: float | None = None
    # How the server's token counts compare with what was asked: {n, mean_ratio, p5_ratio,
    # p95_ratio}; prompt tokens against the words planned, output tokens against max_tokens.
    prompt_vs_planned: Mapping[str, Any] | None = None
    output_vs_asked: Mapping[str, Any] | None = None
    output_tokens_from_chunks: int = 0  # successful requests without usage: counted in chunks
    output_tokens_from_tokenizer: int = 0  # ... counted by the workload's tokenizer
    # Successes a gateway served by a fallback or an unexpected deployment (and whether the
    # policy counted them in `errors`), with the deployments that served them.
    fallbacks: int = 0
    fallbacks_are_errors: bool = False
    fallback_backends: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """A client-versus-server comparison: ``ok`` None when one side had no data."""

    name: str
    ok: bool | None
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's answer for one run."""

    decision: Decision
    objectives: tuple[ObjectiveResult, ...]
    summary: RunSummary
    policy: str
    invalid_reason: str | None = None
    checks: tuple[CheckResult, ...] = ()  # client against server (harness.judge.crosscheck)
    collected: Mapping[str, Any] | None = None  # which collectors ran, and what they lacked
    interrupted: str | None = None  # how a signal cut the run short, and what was left out
    schema: int = VERDICT_SCHEMA

    def to_json_dict(self) -> dict[str, Any]:
        """The verdict.json document: `schema`, `decision`, `objectives`, `summary` first."""
        s = self.summary
        summary: dict[str, Any] = {
            "requests": s.requests,
            "errors": s.errors,
            "error_classes": dict(s.error_classes),
            "duration_s": _num(s.duration_s),
            "request_rate": _num(s.request_rate),
            "output_token_rate": _num(s.output_token_rate),
            "goodput": _num(s.goodput),
            "prompt_tokens_mean": _num(s.prompt_tokens_mean),
            "output_tokens_mean": _num(s.output_tokens_mean),
            "prompt_tokens_vs_planned": _ratios(s.prompt_vs_planned),
            "output_tokens_vs_max_tokens": _ratios(s.output_vs_asked),
        }
        if s.output_tokens_from_chunks:  # only then: earlier verdicts keep their bytes
            summary["output_tokens_from_chunks"] = s.output_tokens_from_chunks
        if s.output_tokens_from_tokenizer:
            summary["output_tokens_from_tokenizer"] = s.output_tokens_from_tokenizer
        if s.fallbacks:
            summary["fallbacks"] = {
                "requests": s.fallbacks,
                "share": _num(s.fallbacks / s.requests) if s.requests else None,
                "counted_as_errors": s.fallbacks_are_errors,
                "served_by": dict(s.fallback_backends),
            }
        for key in ("ttft_s", "tpot_s", "itl_s", "e2el_s", "schedule_lag_s"):
            st: LatencyStats = getattr(s, key)
            summary[key] = {
                "mean": _num(st.mean),
                "p50": _num(st.p50),
                "p90": _num(st.p90),
                "p99": _num(st.p99),
                "n": st.n,
            }
        doc: dict[str, Any] = {
            "schema": self.schema,
            "decision": self.decision.value,
            "objectives": [
                {
                    "name": o.name,
                    "metric": o.metric,
                    "stat": o.stat,
                    "estimate": _num(o.estimate),
                    "unit": o.unit,
                    # An unbounded side (too few samples for an order statistic) is null.
                    "interval": [_num(x) for x in o.interval] if o.interval is not None else None,
                    "n": o.n,
                    "verdict": o.verdict.value,
                    "reason": o.reason,
                    "critical": o.critical,
                    "target": list(o.target) if isinstance(o.target, tuple) else o.target,
                    "alert": o.alert,
                }
                for o in self.objectives
            ],
            "summary": summary,
            "policy": self.policy,
            "invalid_reason": self.invalid_reason,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "collected": self.collected,
        }
        if self.interrupted is not None:  # only then: earlier verdicts keep their bytes
            doc["interrupted"] = self.interrupted
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2, allow_nan=False) + "\n"


def _ratios(cal: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if cal is None:
        return None
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in cal.items()}


def _num(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return float(value)
