"""The one frozen record per request that the load engine writes and everything else reads.

Monotonic times (for latency) are kept apart from the wall-clock anchor (for lining
up with server metrics), and the intended send time apart from the actual one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any, Literal

Phase = Literal["warmup", "measure", "cooldown"]


class ErrorClass(enum.StrEnum):
    """Why a request failed; each has its own count in the summary."""

    CONNECT = "connect"  # could not connect / connection refused / reset before a response
    TIMEOUT = "timeout"  # connect, read or whole-request deadline passed
    HTTP_STATUS = "http_status"  # non-2xx answer
    BROKEN_STREAM = "broken_stream"  # connection lost in the middle of the body
    MALFORMED_CHUNK = "malformed_chunk"  # a data line that is not valid JSON / not a completion
    INCOMPLETE = "incomplete"  # body ended without [DONE], or no content generated
    # In flight when the user stopped the run (Ctrl-C, SIGTERM): not a failure of the target.
    # Kept on disk so every request sent has its record; the judge leaves these out.
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What happened to one request. Times are seconds; `t_*` are time.monotonic()."""

    request_id: int
    worker: str
    phase: Phase
    stream: bool
    wall_sent: float  # time.time() at t_sent: anchor for server-side series
    t_intended: float | None  # scheduled send time (open loop); None in closed loop
    t_sent: float
    t_first: float | None  # first chunk carrying generated content
    t_last: float | None  # last chunk carrying generated content
    t_done: float  # response finished (or failed)
    chunk_times: tuple[float, ...]  # arrival of every content chunk, in order
    prompt_tokens: int | None  # from the server's usage
    output_tokens: int | None  # from the server's usage
    status: int | None  # HTTP status, None when no response came
    error: ErrorClass | None
    error_detail: str = ""
    session: int | None = None  # conversation a multi-turn request belongs to
    turn: int = 0  # its turn in that conversation, from 0
    planned_prompt_tokens: int | None = None  # the prompt length the workload aimed at
    max_tokens: int | None = None  # the output length asked for
    # output_tokens counted by the workload's tokenizer: the server sent no usage
    output_counted: bool = False
    # Who answered, as a gateway (LiteLLM) tells it: LiteLLM answers 200 when a fallback
    # served, so without these a failing backend hides behind it. The deployment's api base
    # (no credentials or query) or else its id, the fallbacks and retries the gateway
    # attempted before this answer, and the model the body named. None when not said.
    served_by: str | None = None
    fallbacks: int | None = None
    retries: int | None = None
    served_model: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_row(self) -> dict[str, Any]:
        """A flat dict for JSON lines / Parquet (error as its string value).

        Field by field rather than ``dataclasses.asdict``, which deep-copies recursively: on a
        64-chunk record 2.6 against 96 µs, paid once per request on the load loop."""
        row = {name: getattr(self, name) for name in ROW_FIELDS}
        row["chunk_times"] = list(self.chunk_times)
        row["error"] = self.error.value if self.error is not None else None
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RequestRecord:
        err = row.get("error")
        chunks = row.get("chunk_times")
        return cls(
            request_id=int(row["request_id"]),
            worker=str(row["worker"]),
            phase=row["phase"],
            stream=bool(row["stream"]),
            wall_sent=float(row["wall_sent"]),
            t_intended=_opt_float(row.get("t_intended")),
            t_sent=float(row["t_sent"]),
            t_first=_opt_float(row.get("t_first")),
            t_last=_opt_float(row.get("t_last")),
            t_done=float(row["t_done"]),
            chunk_times=tuple(float(x) for x in chunks) if chunks is not None else (),
            prompt_tokens=_opt_int(row.get("prompt_tokens")),
            output_tokens=_opt_int(row.get("output_tokens")),
            status=_opt_int(row.get("status")),
            error=ErrorClass(err) if err else None,
            error_detail=str(row.get("error_detail") or ""),
            session=_opt_int(row.get("session")),
            turn=int(row.get("turn") or 0),
            planned_prompt_tokens=_opt_int(row.get("planned_prompt_tokens")),
            max_tokens=_opt_int(row.get("max_tokens")),
            output_counted=bool(row.get("output_counted") or False),
            served_by=_opt_str(row.get("served_by")),
            fallbacks=_opt_int(row.get("fallbacks")),
            retries=_opt_int(row.get("retries")),
            served_model=_opt_str(row.get("served_model")),
        )


ROW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(RequestRecord))
"""RequestRecord's fields in order: the columns of a row."""


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return None if out != out else out  # NaN from Parquet nulls


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    as_float = float(value)
    return None if as_float != as_float else int(as_float)


def _opt_str(value: Any) -> str | None:
    return None if value is None or value != value else str(value)  # NaN from pandas nulls
