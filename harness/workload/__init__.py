"""Workloads: what each request asks for (synthetic, datasets, shared prefixes, conversations).

`spec` is the `workload:` section of a scenario (pure configuration); `build_workload` turns
it into a `Workload` whose numbered sessions yield `RequestSpec`s, seeded and reproducible.
"""

from __future__ import annotations

from harness.workload.base import Messages, RequestSpec, Session, Workload
from harness.workload.build import build_workload
from harness.workload.calibration import TokenCalibration, token_calibration
from harness.workload.spec import (
    Count,
    Distribution,
    FixedLength,
    JsonlWorkload,
    LogNormalLength,
    MultiTurnWorkload,
    NormalLength,
    SharedPrefixWorkload,
    ShareGPTWorkload,
    SyntheticWorkload,
    UniformLength,
    WorkloadSpec,
)

__all__ = [
    "Count",
    "Distribution",
    "FixedLength",
    "JsonlWorkload",
    "LogNormalLength",
    "Messages",
    "MultiTurnWorkload",
    "NormalLength",
    "RequestSpec",
    "Session",
    "ShareGPTWorkload",
    "SharedPrefixWorkload",
    "SyntheticWorkload",
    "TokenCalibration",
    "UniformLength",
    "Workload",
    "WorkloadSpec",
    "build_workload",
    "token_calibration",
]
