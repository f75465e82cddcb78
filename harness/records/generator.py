"""What a load generator says about itself, kept in the manifest so a run can be re-judged.

Each generator process's ``load.guard.LoadGuard`` measures its event-loop lag and CPU use;
the report travels to the master and into ``manifest.json`` (``load.generators``), where the
judge's saturation check reads it, at run time and again under ``harness evaluate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

#: Wake-up lag past which a timestamp is late by as much as a GPU's whole inter-token gap: the
#: guard counts the samples over it, the judge's saturation check decides on those counts.
LAG_LIMIT_S: Final = 0.010


@dataclass(frozen=True, slots=True)
class GuardReport:
    """What one generator process measured about itself. Stats are None without samples."""

    interval_s: float  # intended sleep between lag samples
    duration_s: float  # guard start to stop
    samples: int  # event-loop lag samples
    lag_p50_s: float | None  # wake-up lag: actual minus intended wake time (monotonic)
    lag_p99_s: float | None
    lag_max_s: float | None
    cpu_samples: int  # CPU windows of about `cpu_every_s` each
    cpu_mean: float | None  # process CPU (user + system) as a fraction of one core
    cpu_p95: float | None
    # Lag samples over ``lag_limit_s``: what a lower bound on the p99 needs. None in a report
    # written before the guard counted them.
    lag_limit_s: float | None = None
    lag_over: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for the manifest and for shipping from a worker to the master."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GuardReport:
        def opt(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            interval_s=float(data["interval_s"]),
            duration_s=float(data["duration_s"]),
            samples=int(data["samples"]),
            lag_p50_s=opt("lag_p50_s"),
            lag_p99_s=opt("lag_p99_s"),
            lag_max_s=opt("lag_max_s"),
            cpu_samples=int(data["cpu_samples"]),
            cpu_mean=opt("cpu_mean"),
            cpu_p95=opt("cpu_p95"),
            lag_limit_s=opt("lag_limit_s"),
            lag_over=None if data.get("lag_over") is None else int(data["lag_over"]),
        )
