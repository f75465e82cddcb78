"""Workloads read from files: ShareGPT conversations and JSON-lines prompts.

A dataset is read once, when the workload is built, into (prompt, output length) rows, then
cycled in a seeded random order: request i takes row order[i % rows]. Every problem with the
file is a ConfigError naming the scenario, the key that names the file and what was expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.spec.workload import Count, JsonlWorkload, ShareGPTWorkload
from harness.workload.base import RequestSpec, SingleRequest, aux_rng, session_rng
from harness.workload.text import word_count

_SHUFFLE = 10  # aux_rng purpose

_HUMAN = frozenset({"human", "user"})
_ASSISTANT = frozenset({"gpt", "assistant", "chatgpt", "bard", "bing"})


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a workload came from, for resolving its files and naming them in errors."""

    source: str  # the scenario file, as errors name it
    key: str  # key path of the workload in that file, e.g. "workload"
    base_dir: Path  # relative dataset paths start here (the scenario file's folder)

    def fail(self, field: str, message: str) -> ConfigError:
        return ConfigError(self.source, [(f"{self.key}.{field}", message)])

    def resolve(self, ref: str) -> Path:
        """The dataset file `ref` names; a missing one is a ConfigError naming `path`."""
        path = Path(ref).expanduser()
        if not path.is_absolute():
            path = self.base_dir / path
        if not path.is_file():
            raise self.fail(
                "path",
                f"expected an existing file, but {path} does not exist"
                " (relative paths start at the scenario file's folder)",
            )
        return path


@dataclass(frozen=True, slots=True)
class Row:
    """One dataset entry: the prompt and its output length (None: drawn from max_tokens)."""

    prompt: str
    output_tokens: int | None


class Dataset:
    """Rows served in a seeded shuffled order, cycled; single-turn sessions."""

    needs_reply_text = False

    def __init__(self, rows: list[Row], seed: int, max_tokens: Count | None) -> None:
        if not rows:
            raise ValueError("a dataset needs at least one row")
        self.rows = rows
        self._seed = seed
        self._max_tokens = max_tokens
        self._order = aux_rng(seed, _SHUFFLE).permutation(len(rows))

    def row_of(self, index: int) -> Row:
        return self.rows[int(self._order[index % len(self.rows)])]

    def request(self, index: int) -> RequestSpec:
        row = self.row_of(index)
        if row.output_tokens is not None:
            max_tokens = row.output_tokens
        else:
            assert self._max_tokens is not None  # the loaders give rows a length otherwise
            max_tokens = self._max_tokens.draw(session_rng(self._seed, index))
        return RequestSpec.single(row.prompt, max_tokens)

    def session(self, index: int) -> SingleRequest:
        return SingleRequest(self.request(index))


def load_sharegpt(spec: ShareGPTWorkload, origin: Origin) -> Dataset:
    """The first human turn and the answer after it, filtered by length as vLLM's benchmark
    does (too short to be a real request, too long for the model's context)."""
    path = origin.resolve(spec.path)
    data = _read_json(path, origin)
    if not isinstance(data, list):
        raise origin.fail(
            "path", f"{path}: expected a JSON list of {{id, conversations}} (ShareGPT format)"
        )
    # With max_tokens given, the total-length check uses its smallest value: exactly vLLM's
    # check for a fixed length, and for a distribution it drops only pairs that never fit.
    fixed_out = spec.max_tokens.bounds[0] if spec.max_tokens is not None else None
    rows: list[Row] = []
    usable = 0
    for item in data:
        pair = _first_exchange(item)
        if pair is None:
            continue
        usable += 1
        prompt, answer = pair
        prompt_len, answer_len = word_count(prompt), word_count(answer)
        out_len = answer_len if fixed_out is None else fixed_out
        if prompt_len < spec.min_tokens or (fixed_out is None and out_len < spec.min_tokens):
            continue
        if prompt_len > spec.max_prompt_tokens or prompt_len + out_len > spec.max_total_tokens:
            continue
        rows.append(Row(prompt, answer_len if fixed_out is None else None))
    if not rows:
        raise origin.fail(
            "path",
            f"{path}: expected conversations with a human turn and an answer within the length "
            f"limits; {len(data)} entries, {usable} with both turns, none within the limits",
        )
    return Dataset(rows, spec.seed, spec.max_tokens)


def _first_exchange(item: Any) -> tuple[str, str] | None:
    """(first human text, the assistant text right after it), or None if it has no such pair."""
    turns = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(turns, list):
        return None
    prompt: str | None = None
    for turn in turns:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            continue
        role = turn.get("from")
        if prompt is None:
            if role in _HUMAN and turn["value"].strip():
                prompt = turn["value"]
        elif role in _ASSISTANT:
            return prompt, turn["value"]
    return None


def load_jsonl(spec: JsonlWorkload, origin: Origin) -> Dataset:
    """One JSON object a line; blank lines skipped, any other bad line refused by number."""
    path = origin.resolve(spec.path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise origin.fail("path", f"{path}: cannot read: {exc}") from None
    rows = [
        _jsonl_row(spec, origin, f"{path}: line {number}", line)
        for number, line in enumerate(lines, start=1)
        if line.strip()
    ]
    if not rows:
        raise origin.fail("path", f"{path}: expected one JSON object a line, found no lines")
    return Dataset(rows, spec.seed, None if spec.max_tokens_field else spec.max_tokens)


def _jsonl_row(spec: JsonlWorkload, origin: Origin, where: str, line: str) -> Row:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise origin.fail("path", f"{where}: not valid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise origin.fail("path", f"{where}: expected a JSON object")
    text = obj.get(spec.field)
    if not isinstance(text, str) or not text.strip():
        raise origin.fail("field", f"{where}: expected non-empty text under {spec.field!r}")
    if spec.max_tokens_field is None:
        return Row(text, None)
    out = obj.get(spec.max_tokens_field)
    if isinstance(out, bool) or not isinstance(out, int) or out < 1:
        raise origin.fail(
            "max_tokens_field",
            f"{where}: expected a whole number of 1 or more under {spec.max_tokens_field!r}"
            f" (got {out!r})",
        )
    return Row(text, out)


def _read_json(path: Path, origin: Origin) -> Any:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise origin.fail(
            "path", f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise origin.fail("path", f"{path}: cannot read: {exc}") from None
