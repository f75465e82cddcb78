"""Loading YAML into strict pydantic models with errors that name file, key path and expectation."""

from __future__ import annotations

import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from harness.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


#: Largest document a scenario or policy may expand to, counting every node an alias repeats:
#: real files have a few hundred; an alias bomb (a billion leaves from 90 aliases) is refused
#: before anything walks it.
MAX_NODES = 100_000

#: Problems listed in one error; the rest are counted.
MAX_PROBLEMS = 20

#: What an error message shows of a value: a bounded excerpt, never the whole input.
_EXCERPT = reprlib.Repr()
_EXCERPT.maxlevel, _EXCERPT.maxdict, _EXCERPT.maxlist, _EXCERPT.maxtuple = 2, 4, 4, 4
_EXCERPT.maxstring = _EXCERPT.maxother = 50


class StrictModel(BaseModel):
    """Base of every configuration model: frozen, typed, unknown keys refused, and no
    booleans passing for numbers or numbers and strings for booleans (``rate: true`` is a
    mistake, not 1 request a second)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )

    @model_validator(mode="before")
    @classmethod
    def _strict_scalars(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key not in out:
                continue
            value, kinds = out[key], _scalar_kinds(field.annotation)
            if isinstance(value, bool) and "bool" not in kinds and kinds & {"int", "float"}:
                out[key] = _Refused(value, "a boolean where a number belongs")
            elif kinds == {"bool"} and not isinstance(value, bool):
                out[key] = _Refused(value, "not true or false")
        return out


class _Refused:
    """Stands in for a value of the wrong scalar kind, so that the field's own validation
    fails at the user's key path and the message shows what was given."""

    def __init__(self, value: Any, why: str) -> None:
        self.text = f"{_EXCERPT.repr(value)}: {why}"

    def __repr__(self) -> str:
        return self.text


def _scalar_kinds(annotation: Any) -> set[str]:
    """Which of bool, int and float an annotation admits (through Optional, unions and
    Annotated); anything else counts as "other"."""
    if annotation is None or annotation is type(None):
        return set()
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_scalar_kinds(a) for a in typing.get_args(annotation)))
    if annotation in (bool, int, float):
        return {annotation.__name__}
    return {"other"}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys and documents that expand too far."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {_EXCERPT.repr(key)} (first on line "
                    f"{seen[key]})", key_node.start_mark,
                )  # fmt: skip
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document has once every alias is expanded (shared nodes counted each time
    they are used), computed once per node, so a bomb costs no more than its text."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            sizes[id(node)] = min(1 + sum(sizes.get(id(c), 0) for c in children), MAX_NODES + 1)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml_text(text: str) -> Any:
    """One YAML document, through the strict loader; raises yaml.YAMLError."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_size(root) > MAX_NODES:
            raise yaml.YAMLError(
                f"the document expands to more than {MAX_NODES:,} values (aliases repeating "
                "aliases?): refused"
            )
        return loader.construct_document(root)
    finally:
        loader.dispose()


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

    Walks the input alongside the location: a segment that equals the `type` tag of the
    mapping there was added by the union and is not the user's key, unless it is also a key
    there and not repeated next (a tag that names one of its own keys: `sim` in
    launcher.sim.sim.max_num_seqs).
    """
    out: list[int | str] = []
    node = data
    for i, part in enumerate(loc):
        if (
            isinstance(node, dict)
            and node.get("type") == part
            and (part not in node or loc[i + 1 : i + 2] == (part,))
        ):
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
    errors = exc.errors(include_url=False)
    if len(errors) > MAX_PROBLEMS:
        more = len(errors) - MAX_PROBLEMS
        errors = errors[:MAX_PROBLEMS]
    else:
        more = 0
    for err in errors:
        loc = _user_loc(tuple(err["loc"]), data)
        msg = err["msg"]
        kind = err["type"]
        if kind == "extra_forbidden":
            msg = "unknown key (not allowed here; check spelling)"
        elif kind == "missing":
            msg = "required key is missing"
        elif "input" in err and kind not in ("union_tag_invalid", "union_tag_not_found"):
            msg = f"{msg} (got {_EXCERPT.repr(err['input'])})"
        problems.append((_key_path(loc), msg))
    if more:
        problems.append(("...", f"and {more:,} more problems like these"))
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
        data = load_yaml_text(text)
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
            value = load_yaml_text(raw) if raw.strip() else None
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
