"""Loading YAML into strict pydantic models with errors that name file, key path and expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from harness.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every configuration model: frozen, typed, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{item}")
        else:
            parts.append(str(item))
    return "".join(parts)


def _user_loc(loc: tuple[int | str, ...], data: Any) -> tuple[int | str, ...]:
    """Drop the segments pydantic adds for tagged unions ("poisson" in load.arrival.poisson.rate).

    Walks the input alongside the location: a segment that is not a key of the mapping
    there, but equals its `type` tag, was added by the union and is not the user's key.
    """
    out: list[int | str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def format_validation_error(exc: ValidationError, data: Any) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (key path, what was expected) pairs."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = _user_loc(tuple(err["loc"]), data)
        msg = err["msg"]
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key (not allowed here; check spelling)"
        elif kind == "missing":
            msg = "required key is missing"
        elif "input" in err and kind not in ("union_tag_invalid", "union_tag_not_found"):
            shown = repr(err["input"])
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = f"{msg} (got {shown})"
        problems.append((_key_path(loc), msg))
    return problems


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a ConfigError for that file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), [("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [("", f"cannot read file: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [(where, f"invalid YAML: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            str(path), [("", f"expected a mapping of keys at the top, got {type(data).__name__}")]
        )
    return data


def validate(model: type[M], data: Any, source: str, context: dict[str, Any] | None = None) -> M:
    """Validate data into model or raise ConfigError naming source."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(source, format_validation_error(exc, data)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply `--set a.b.c=VALUE` overrides (VALUE read as YAML) to a raw mapping."""
    result: dict[str, Any] = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(source, [("--set " + item, "expected KEY=VALUE, e.g. load.rate=5")])
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node: dict[str, Any] = result
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(source, [(where, f"--set {key}: {where} is not a mapping")])
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
