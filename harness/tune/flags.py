"""A tuning setting in the forms a server takes it: ``vllm serve`` flags and environment, a
shell line to paste, a merge patch for a KServe InferenceService, and the built-in
simulator's knobs.

A setting maps vLLM engine-argument names in snake_case (``max_num_seqs``) or ``VLLM_*``
environment variables to values; ``None`` leaves the argument at vLLM's default (no flag, and
any flag already in an InferenceService's args removed). vLLM builds its flags from its config
dataclasses (vllm/engine/arg_utils.py): a ``bool`` field takes ``argparse.BooleanOptionalAction``
(``--enable-prefix-caching`` / ``--no-enable-prefix-caching``), a list takes ``nargs="+"``
(one argument per item), a dict a JSON string; its parser accepts ``_`` for ``-`` in names.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final

from harness.sim.settings import SimSettings, cli_flag, seconds_to_ms

ENV_PREFIX: Final = "VLLM_"
_ENGINE_ARG = re.compile(r"^[a-z][a-z0-9_]*$")
_ENV_VAR = re.compile(r"^VLLM_[A-Z0-9_]+$")
_NUMBER = re.compile(r"^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

#: vLLM settings that are simulator fields of the same name and meaning.
SIM_DIRECT: Final = (
    "max_num_seqs",
    "max_num_batched_tokens",
    "gpu_memory_utilization",
    "max_model_len",
    "block_size",
    "num_gpu_blocks_override",
    "seed",
)
#: Extra step time per additional tensor-parallel GPU (the all-reduce of every layer).
TP_COMM_OVERHEAD: Final = 0.05
_STEP_COSTS: Final = ("step_base_s", "per_seq_s", "prefill_per_token_s")


def is_env(name: str) -> bool:
    """Whether a setting's name is an environment variable rather than an engine argument."""
    return name.startswith(ENV_PREFIX)


def _check_name(name: str) -> None:
    pattern = _ENV_VAR if is_env(name) else _ENGINE_ARG
    if not pattern.match(name):
        raise ValueError(
            f"{name!r}: expected a vLLM engine argument in snake_case (max_num_seqs) or a "
            "VLLM_* environment variable"
        )


def flag(name: str) -> str:
    """``max_num_seqs`` -> ``--max-num-seqs``."""
    return "--" + name.replace("_", "-")


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value)


def _items(name: str, value: Sequence[Any]) -> list[str]:
    if not value:
        raise ValueError(f"{name}: an empty list has no flag form (vLLM's lists take 1 or more)")
    return [_text(v) for v in value]


def _engine_args(name: str, value: Any, joined: bool) -> list[str]:
    """One engine argument's tokens; ``joined`` writes a scalar as ``--flag=value``."""
    if value is None:
        return []
    if isinstance(value, bool):
        return [flag(name) if value else "--no-" + flag(name)[2:]]
    if isinstance(value, list | tuple):
        return [flag(name), *_items(name, value)]
    return [f"{flag(name)}={_text(value)}"] if joined else [flag(name), _text(value)]


def vllm_args(setting: Mapping[str, Any]) -> list[str]:
    """The setting's engine arguments as ``vllm serve`` flags, in the setting's order; the
    ``VLLM_*`` entries are left to ``vllm_env``."""
    args: list[str] = []
    for name, value in setting.items():
        _check_name(name)
        if not is_env(name):
            args += _engine_args(name, value, joined=False)
    return args


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"  # vLLM reads its boolean variables as "1" / "0"
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def vllm_env(setting: Mapping[str, Any]) -> dict[str, str]:
    """The setting's ``VLLM_*`` environment variables (booleans as "1" / "0")."""
    env: dict[str, str] = {}
    for name, value in setting.items():
        _check_name(name)
        if is_env(name) and value is not None:
            env[name] = _env_text(value)
    return env


def serve_command(model: str, setting: Mapping[str, Any], extra_args: Sequence[str] = ()) -> str:
    """A shell line that starts vLLM with the setting, ready to paste: its ``VLLM_*`` variables
    first, then ``vllm serve MODEL``, the extra arguments and the setting's flags (last, so
    they win where both name a flag)."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in vllm_env(setting).items())
    line = shlex.join(["vllm", "serve", model, *extra_args, *vllm_args(setting)])
    return f"{env} {line}" if env else line


# -- KServe -----------------------------------------------------------------------------------


def _is_option(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _NUMBER.match(token)


def _option_name(token: str) -> str:
    """``--max_num_seqs=8`` -> ``max-num-seqs`` (vLLM's parser takes both spellings)."""
    return token[2:].split("=", 1)[0].replace("_", "-")


def without_flags(args: Sequence[str], setting: Mapping[str, Any]) -> list[str]:
    """``args`` without any occurrence of the setting's engine arguments: ``--flag value``,
    ``--flag=value``, ``--no-flag``, and the ``_`` spellings. A removed ``--flag`` takes its
    value with it: every following non-option for a list, one for any other value, and a
    following ``true`` / ``false`` for a boolean (older vLLMs took one)."""
    kinds: dict[str, Any] = {}
    for name, value in setting.items():
        if not is_env(name):
            base = name.replace("_", "-")
            kinds[base] = kinds["no-" + base] = value
    kept: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        name = _option_name(token) if token.startswith("--") else ""
        if name not in kinds:
            kept.append(token)
            continue
        if "=" in token or (name.startswith("no-") and name[3:] in kinds):
            continue
        value = kinds[name]
        if isinstance(value, bool):
            if i < len(args) and args[i].lower() in ("true", "false"):
                i += 1
        elif isinstance(value, list | tuple):
            while i < len(args) and not _is_option(args[i]):
                i += 1
        elif i < len(args) and not _is_option(args[i]):
            i += 1
    return kept


def _with_setting_args(args: Sequence[str], setting: Mapping[str, Any]) -> list[str]:
    kept = without_flags(args, setting)
    for name, value in setting.items():
        if not is_env(name):
            kept += _engine_args(name, value, joined=True)
    return kept


def _with_setting_env(env: Sequence[Any], setting: Mapping[str, Any]) -> list[Any]:
    ours = {k: v for k, v in setting.items() if is_env(k)}
    kept = [copy.deepcopy(e) for e in env if not (isinstance(e, dict) and e.get("name") in ours)]
    return kept + [{"name": k, "value": _env_text(v)} for k, v in ours.items() if v is not None]


def _predictor(isvc: Mapping[str, Any] | None) -> dict[str, Any]:
    spec = isvc.get("spec") if isvc is not None else None
    predictor = spec.get("predictor") if isinstance(spec, dict) else None
    return predictor if isinstance(predictor, dict) else {}


def _container_index(predictor: Mapping[str, Any], container: str) -> int | None:
    """Where the custom container sits in ``spec.predictor.containers``; None when the
    predictor is a ``model`` (the Hugging Face / vLLM runtime)."""
    containers = predictor.get("containers")
    if isinstance(predictor.get("model"), dict) or not isinstance(containers, list):
        return None
    if not containers:
        return None
    names = [c.get("name") if isinstance(c, dict) else None for c in containers]
    if container not in names:
        raise ValueError(
            f"the predictor has no container {container!r} (it has {names}): name the one to "
            "patch in launcher.container"
        )
    return names.index(container)


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _check_setting(setting: Mapping[str, Any]) -> None:
    for name in setting:
        _check_name(name)


def isvc_patch(
    isvc: Mapping[str, Any] | None, setting: Mapping[str, Any], container: str = "kserve-container"
) -> dict[str, Any]:
    """The JSON merge patch that runs an InferenceService with the setting.

    The engine arguments go into the predictor's ``args`` (``--flag=value``, ``--flag`` /
    ``--no-flag``), the ``VLLM_*`` variables into its ``env``: of ``spec.predictor.model`` (the
    Hugging Face / vLLM runtime), or of the container named ``container`` in
    ``spec.predictor.containers`` (a custom container). A merge patch replaces a list whole, so
    the lists are read from ``isvc`` (None: a bare ``spec.predictor.model``), every occurrence
    of a flag or variable the setting names is removed, the setting's are appended, and every
    other entry is kept as it was. A list the setting does not touch is left out of the patch.
    """
    _check_setting(setting)
    predictor = _predictor(isvc)
    index = _container_index(predictor, container)
    target = predictor.get("model") if index is None else predictor["containers"][index]
    target = target if isinstance(target, dict) else {}
    changed: dict[str, Any] = {}
    if any(not is_env(k) for k in setting):
        changed["args"] = _with_setting_args(_list(target.get("args")), setting)
    if any(is_env(k) for k in setting):
        changed["env"] = _with_setting_env(_list(target.get("env")), setting)
    if index is None:
        return {"spec": {"predictor": {"model": changed}}}
    containers = copy.deepcopy(predictor["containers"])
    containers[index] = {**containers[index], **changed}
    return {"spec": {"predictor": {"containers": containers}}}


def isvc_restore_patch(
    isvc: Mapping[str, Any], container: str = "kserve-container"
) -> dict[str, Any]:
    """The merge patch that puts back the args and env ``isvc`` had (an absent list is
    removed with ``null``), for the predictor kind ``isvc_patch`` patches."""
    predictor = _predictor(isvc)
    index = _container_index(predictor, container)
    if index is not None:
        return {"spec": {"predictor": {"containers": copy.deepcopy(predictor["containers"])}}}
    model = predictor.get("model")
    model = model if isinstance(model, dict) else {}
    lists = {key: copy.deepcopy(model[key]) if key in model else None for key in ("args", "env")}
    return {"spec": {"predictor": {"model": lists}}}


# -- the built-in simulator -------------------------------------------------------------------


def _default(name: str) -> Any:
    return SimSettings.model_fields[name].default


def sim_settings(
    base: Mapping[str, Any], setting: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The simulator's settings for a vLLM setting on top of ``base``, and notes on what the
    simulator does not model (each "not modelled by the simulator: NAME").

    - ``max_num_seqs``, ``max_num_batched_tokens``, ``gpu_memory_utilization``,
      ``max_model_len``, ``block_size``, ``num_gpu_blocks_override`` and ``seed`` are the
      simulator's own knobs of the same meaning.
    - ``tensor_parallel_size`` N: one GPU N times as large and fast, less the all-reduce: the
      memory ``gpu_memory_gib`` × N (the weights are split, so the KV cache gets N × the
      memory less the weights once), and each step cost (``step_base_s``, ``per_seq_s``,
      ``prefill_per_token_s``) × (1 + 0.05 × (N − 1)) / N.
    - ``enable_chunked_prefill: false``: vLLM then needs ``max_num_batched_tokens`` ≥
      ``max_model_len``; without a budget given (in ``base`` or the setting) it sets the
      budget to ``max_model_len``, with a smaller one it refuses to start, and so does this
      (ValueError with vLLM's reason). The simulator still splits a prompt across steps when
      other sequences share the budget: noted.
    - Anything else (``enable_prefix_caching``, ``VLLM_*`` variables, ...) is noted.

    ``None`` leaves a knob as ``base`` has it. The result is not validated: the simulator's
    process refuses what it cannot run, as vLLM does.
    """
    _check_setting(setting)
    out = dict(base)
    notes: list[str] = []
    for name, value in setting.items():
        if value is None:
            continue
        if name in SIM_DIRECT:
            out[name] = value
        elif name == "tensor_parallel_size":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"tensor_parallel_size must be a whole number ≥ 1, not {value!r}")
            factor = (1 + TP_COMM_OVERHEAD * (value - 1)) / value
            out["gpu_memory_gib"] = out.get("gpu_memory_gib", _default("gpu_memory_gib")) * value
            for cost in _STEP_COSTS:
                # 12 digits: exact enough, and the command line stays readable
                out[cost] = float(f"{out.get(cost, _default(cost)) * factor:.12g}")
            if value > 1:
                notes.append(
                    f"tensor_parallel_size {value}: simulated as one GPU with {value}× the "
                    f"memory and step costs × {factor:.3g}"
                )
        elif name == "enable_chunked_prefill" and value is False:
            notes.append(_no_chunked_prefill(out, base, setting))
        elif name != "enable_chunked_prefill":
            notes.append(f"not modelled by the simulator: {name}")
    return out, notes


def _no_chunked_prefill(
    out: dict[str, Any], base: Mapping[str, Any], setting: Mapping[str, Any]
) -> str:
    """vLLM's rule without chunked prefill (SchedulerConfig.verify_max_model_len and
    EngineArgs' default budget), applied to ``out``; the note saying so."""
    length = setting.get("max_model_len") or base.get("max_model_len") or _default("max_model_len")
    budget = setting.get("max_num_batched_tokens") or base.get("max_num_batched_tokens")
    if budget is None:
        out["max_num_batched_tokens"] = budget = length
    elif isinstance(budget, int) and isinstance(length, int) and budget < length:
        raise ValueError(
            f"max_num_batched_tokens ({budget}) is smaller than max_model_len ({length}): "
            "with enable_chunked_prefill false vLLM refuses to start (a full-length prompt "
            "could never be scheduled); raise max_num_batched_tokens or lower max_model_len"
        )
    return (
        f"enable_chunked_prefill false: only vLLM's budget rule is simulated "
        f"(max_num_batched_tokens {budget} ≥ max_model_len {length}); the simulator still "
        "chunks prompts that share a step"
    )


def sim_cli_args(settings: Mapping[str, Any]) -> list[str]:
    """``harness sim`` flags for simulator settings as given (durations in ms, as
    ``SimSettings.to_cli_args`` writes them), unvalidated, so the simulator's process is the
    one to refuse a setting, with its own message. The API key is left out (the environment
    carries it)."""
    args: list[str] = []
    for name, value in settings.items():
        if value is None or name == "api_key":
            continue
        option, in_ms = cli_flag(name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        args += [option, seconds_to_ms(value) if in_ms and number else str(value)]
    return args
