"""From a `workload:` section to the runtime workload the driver draws requests from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.spec.workload import WorkloadSpec
from harness.workload.base import Workload
from harness.workload.datasets import Origin, load_jsonl, load_sharegpt
from harness.workload.generated import MultiTurn, SharedPrefix, Synthetic
from harness.workload.tokens import Counter, TokenTable

_BUILDERS: dict[str, Callable[[Any, Origin], Workload]] = {
    "synthetic": lambda spec, _: Synthetic(spec),
    "shared_prefix": lambda spec, _: SharedPrefix(spec),
    "multi_turn": lambda spec, _: MultiTurn(spec),
    "sharegpt": load_sharegpt,
    "jsonl": load_jsonl,
}


def build_workload(
    spec: WorkloadSpec, scenario_dir: Path, source: str | None = None, key: str = "workload"
) -> Workload:
    """Build once per run, before load starts: datasets are read here, and a missing or bad
    file is a ConfigError naming `source` (the scenario file) and the key path under `key`.
    Relative dataset paths start at `scenario_dir`, the scenario file's folder."""
    origin = Origin(source=source or str(scenario_dir), key=key, base_dir=scenario_dir)
    return _BUILDERS[spec.type](spec, origin)


def use_tokens(workload: Workload, table: TokenTable) -> None:
    """Have a generated workload plan its prompt lengths in the model's tokens."""
    if not isinstance(workload, Synthetic | SharedPrefix | MultiTurn):
        raise UsageError("workload.tokenizer applies to generated prompts only")
    workload.use_tokens(table)


def reply_counter(workload: Workload) -> Counter | None:
    """The tokenizer to count a reply's tokens with when the server sends no usage: only a
    local one (never a request to the target per reply)."""
    if isinstance(workload, Synthetic | SharedPrefix | MultiTurn):
        table = workload.tokens
        if table is not None and table.local:
            return table.count
    return None


def tokens_of(workload: Workload) -> TokenTable | None:
    """The token table a generated workload plans with, if any."""
    if isinstance(workload, Synthetic | SharedPrefix | MultiTurn):
        return workload.tokens
    return None
