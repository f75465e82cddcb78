"""Formatting shared by every report, so the terminal, Markdown and JUnit agree to the digit."""

from __future__ import annotations

from harness.judge.verdict import LatencyStats, ObjectiveResult, RunSummary
from harness.spec.quantity import format_quantity


def stat_label(result: ObjectiveResult) -> str:
    """ "p99 e2el", or just the metric for run-level values."""
    return result.metric if result.stat == "value" else f"{result.stat} {result.metric}"


def target_text(result: ObjectiveResult) -> str:
    """The target as written in a runbook: a bound, or "min–max" for a band."""
    if isinstance(result.target, tuple):
        low, high = result.target
        return f"{format_quantity(low, result.unit)}–{format_quantity(high, result.unit)}"
    return format_quantity(result.target, result.unit)


def alert_text(result: ObjectiveResult) -> str:
    return format_quantity(result.alert, result.unit) if result.alert is not None else "—"


def estimate_text(result: ObjectiveResult) -> str:
    """The estimate, with its confidence interval once the judge provides one."""
    text = format_quantity(result.estimate, result.unit)
    if result.interval is not None:
        low, high = result.interval
        text += f" [{format_quantity(low, result.unit)}, {format_quantity(high, result.unit)}]"
    return text


def latency_pair(stats: LatencyStats) -> str:
    """ "p50 / p99" of a latency metric, or an em dash without samples."""
    if stats.n == 0:
        return "—"
    return f"{format_quantity(stats.p50, 's')} / {format_quantity(stats.p99, 's')}"


def summary_line(summary: RunSummary) -> str:
    """Two lines with the run's headline numbers: volume, then latency."""
    errors = ", ".join(f"{k} {v}" for k, v in summary.error_classes.items())
    return (
        f"{summary.requests} requests, {summary.errors} errors ({error_share(summary)})"
        f"{f' [{errors}]' if errors else ''}, "
        f"{format_quantity(summary.request_rate, '1/s')} req, "
        f"{format_quantity(summary.output_token_rate, '1/s')} tok, "
        f"goodput {format_quantity(summary.goodput, '1/s')}\n"
        f"p50 / p99: TTFT {latency_pair(summary.ttft_s)}, "
        f"TPOT {latency_pair(summary.tpot_s)}, "
        f"ITL {latency_pair(summary.itl_s)}, "
        f"E2EL {latency_pair(summary.e2el_s)}"
    )


def error_share(summary: RunSummary) -> str:
    if summary.requests == 0:
        return "—"
    return format_quantity(summary.errors / summary.requests, "ratio")


def token_source_note(summary: RunSummary) -> str | None:
    """Where output token counts came from, when not all from the server's usage."""
    chunks = summary.output_tokens_from_chunks
    counted = summary.output_tokens_from_tokenizer
    if not chunks and not counted:
        return None
    ok = summary.requests - summary.errors
    said = f"output tokens: {chunks + counted} of {ok} successful requests came without usage "
    if not chunks:
        return said + "from the server; the workload's tokenizer counted their text"
    if counted:
        said += f"from the server; the tokenizer counted {counted}, and for {chunks} "
    else:
        said += "from the server; "
    return said + (
        "the counts (and TPOT and the token rate) are content chunks, a lower bound when a "
        "chunk carries several tokens"
    )


def fallback_note(summary: RunSummary) -> str | None:
    """How many successes a gateway served from a fallback or another deployment, and by
    whom; None when none did (a 200 from a fallback hides a failing backend)."""
    count = summary.fallbacks
    if not count:
        return None
    share = format_quantity(count / summary.requests, "ratio") if summary.requests else "—"
    where = ", ".join(f"{name} {n}" for name, n in summary.fallback_backends.items())
    counted = "counted as errors" if summary.fallbacks_are_errors else "not counted as errors"
    return (
        f"fallbacks: {count} requests ({share}) were served by a fallback or by another "
        f"deployment than expected{f' ({where})' if where else ''}; {counted}"
    )
