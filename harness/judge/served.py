"""Which requests a gateway served from something other than the backend under test.

LiteLLM answers 200 when a fallback model served a request, so a canary that fails every
request can look healthy behind its fallback. A request counts as fallback-served when it
succeeded and the gateway says it attempted a fallback first (`fallbacks` > 0 in the
record), or, when the scenario names the deployments under test (`target.expect_backend`),
when the gateway names another one as having served it (`served_by`). A request whose
gateway says nothing (a bare vLLM) is served by the target itself: never counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.judge.dependence import BoolArray
from harness.records.record import RequestRecord
from harness.records.redact import backend_name
from harness.spec.policy import Policy

#: The error class a fallback-served request gets when the policy counts them as errors
#: (the judge's name for it: the client recorded a success).
FALLBACK_CLASS = "fallback"
#: Record columns the rule reads (absent in records written before them: nothing counts).
SERVED_COLUMNS = ("served_by", "fallbacks")


@dataclass(frozen=True, slots=True)
class ServedRule:
    """The deployments expected to serve (normalised as records keep them; empty: any),
    and whether a request served otherwise is an error (the policy's choice)."""

    expect: frozenset[str] = frozenset()
    as_error: bool = False

    @classmethod
    def of(cls, policy: Policy, expect_backend: Iterable[str] = ()) -> ServedRule:
        return cls(
            expect=frozenset(backend_name(b) for b in expect_backend),
            as_error=policy.fallback_counts_as_error,
        )

    def mask(self, table: pa.Table) -> BoolArray:
        """Per row: served by a fallback or by an unexpected deployment (status aside)."""
        n = table.num_rows
        out = np.zeros(n, dtype=np.bool_)
        if "fallbacks" in table.column_names:
            tried = pc.cast(table["fallbacks"], pa.float64()).to_numpy(zero_copy_only=False)
            out |= np.nan_to_num(np.asarray(tried, dtype=np.float64), nan=0.0) > 0
        if self.expect and "served_by" in table.column_names:
            named = pc.cast(table["served_by"], pa.string())
            known = pc.is_valid(named)
            listed = pc.is_in(named, value_set=pa.array(sorted(self.expect), pa.string()))
            other = pc.and_(known, pc.invert(pc.fill_null(listed, False)))
            out |= np.asarray(other.to_numpy(zero_copy_only=False), dtype=np.bool_)
        return out

    def one(self, record: RequestRecord) -> bool:
        """`mask` for one record (the early-stop looks fold records one batch at a time)."""
        if record.fallbacks is not None and record.fallbacks > 0:
            return True
        served = record.served_by
        return bool(self.expect) and served is not None and served not in self.expect


NO_RULE = ServedRule()


def expected_backends(scenario: Mapping[str, Any]) -> tuple[str, ...]:
    """`target.expect_backend` of a scenario as a run folder's manifest keeps it."""
    target = scenario.get("target")
    value = target.get("expect_backend") if isinstance(target, Mapping) else None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value if isinstance(v, str))
    return ()


def top_backends(served_by: Any, rows: BoolArray, keep: int = 3) -> dict[str, int]:
    """The deployments that served the given rows, most first ("?" where none was named)."""
    if not rows.any():
        return {}
    names = pc.fill_null(pc.cast(served_by, pa.string()), "?").filter(pa.array(rows))
    counts = pc.value_counts(names)
    pairs = zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
    ranked = sorted(((str(v), int(c)) for v, c in pairs), key=lambda vc: (-vc[1], vc[0]))
    return dict(ranked[:keep])
