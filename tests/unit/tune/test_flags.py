"""A tuning setting in each form a server takes it: vLLM's flags and environment, a shell line,
a KServe merge patch that touches only what the setting names, and the simulator's knobs."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.sim.command import settings_from_cli, sim
from harness.sim.settings import SimSettings
from harness.tune.flags import (
    isvc_patch,
    isvc_restore_patch,
    serve_command,
    sim_cli_args,
    sim_settings,
    vllm_args,
    vllm_env,
)

SETTING: dict[str, Any] = {
    "max_num_seqs": 64,
    "gpu_memory_utilization": 0.85,
    "enable_prefix_caching": True,
    "enable_chunked_prefill": False,
    "cudagraph_capture_sizes": [1, 2, 4],
    "compilation_config": {"level": 3},
    "max_model_len": None,
    "VLLM_ATTENTION_BACKEND": "FLASHINFER",
    "VLLM_USE_V1": True,
}


def test_engine_arguments_become_vllm_flags_in_order() -> None:
    assert vllm_args(SETTING) == [
        "--max-num-seqs", "64",
        "--gpu-memory-utilization", "0.85",
        "--enable-prefix-caching",
        "--no-enable-chunked-prefill",
        "--cudagraph-capture-sizes", "1", "2", "4",
        "--compilation-config", '{"level":3}',
    ]  # fmt: skip


def test_vllm_variables_go_to_the_environment_only() -> None:
    assert vllm_env(SETTING) == {"VLLM_ATTENTION_BACKEND": "FLASHINFER", "VLLM_USE_V1": "1"}
    assert vllm_env({"VLLM_USE_V1": False, "VLLM_X": None}) == {"VLLM_USE_V1": "0"}
    assert vllm_args({"VLLM_USE_V1": False}) == []


@pytest.mark.parametrize(
    "setting",
    [{"max-num-seqs": 8}, {"MaxNumSeqs": 8}, {"VLLM_lower": "x"}, {"max_num_seqs; rm": 1},
     {"cudagraph_capture_sizes": []}],
)  # fmt: skip
def test_names_and_values_vllm_cannot_take_are_refused(setting: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"expected a vLLM engine argument|empty list"):
        vllm_args(setting)


def test_the_serve_line_is_shell_quoted_and_runs_the_same_argv() -> None:
    line = serve_command("org/my model", SETTING, ["--dtype", "half"])
    assert line.startswith("VLLM_ATTENTION_BACKEND=FLASHINFER VLLM_USE_V1=1 vllm serve ")
    argv = shlex.split(line)
    assert argv[2:] == ["vllm", "serve", "org/my model", "--dtype", "half", *vllm_args(SETTING)]
    assert serve_command("m", {"max_num_seqs": 8}) == "vllm serve m --max-num-seqs 8"


# -- KServe -----------------------------------------------------------------------------------


def model_isvc(args: list[str] | None = None, env: list[Any] | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"modelFormat": {"name": "huggingface"}, "storageUri": "hf://m"}
    if args is not None:
        model["args"] = args
    if env is not None:
        model["env"] = env
    return {"metadata": {"name": "llm"}, "spec": {"predictor": {"model": model}}}


def test_without_an_object_the_patch_is_for_a_bare_model_predictor() -> None:
    assert isvc_patch(None, {"max_num_seqs": 8, "enable_prefix_caching": False,
                             "VLLM_X": 1}) == {"spec": {"predictor": {"model": {
        "args": ["--max-num-seqs=8", "--no-enable-prefix-caching"],
        "env": [{"name": "VLLM_X", "value": "1"}],
    }}}}  # fmt: skip
    assert isvc_patch(None, {"max_num_seqs": 8}) == {
        "spec": {"predictor": {"model": {"args": ["--max-num-seqs=8"]}}}
    }


def test_every_spelling_of_a_flag_is_replaced_and_the_rest_kept_in_order() -> None:
    args = ["--model_name=llm", "--max-num-seqs", "256", "--dtype=half",
            "--max_num_seqs=128", "--enable-chunked-prefill", "false", "--port", "8080",
            "--no-enable-prefix-caching", "--cudagraph-capture-sizes", "8", "16",
            "--seed", "-1", "--enable-prefix-caching", "--trust-remote-code"]  # fmt: skip
    secret = {"secretKeyRef": {"name": "hf", "key": "t"}}
    env = [{"name": "HF_HOME", "value": "/cache"},
           {"name": "VLLM_ATTENTION_BACKEND", "value": "XFORMERS"},
           {"name": "HF_TOKEN", "valueFrom": secret}]  # fmt: skip
    patch = isvc_patch(model_isvc(args, env), {
        "max_num_seqs": 64, "enable_chunked_prefill": True, "enable_prefix_caching": False,
        "cudagraph_capture_sizes": [1, 2], "seed": None, "VLLM_ATTENTION_BACKEND": "FLASHINFER",
    })  # fmt: skip
    model = patch["spec"]["predictor"]["model"]
    assert model["args"] == [
        "--model_name=llm", "--dtype=half", "--port", "8080", "--trust-remote-code",
        "--max-num-seqs=64", "--enable-chunked-prefill", "--no-enable-prefix-caching",
        "--cudagraph-capture-sizes", "1", "2",
    ]  # fmt: skip
    assert model["env"] == [env[0], env[2], {"name": "VLLM_ATTENTION_BACKEND",
                                             "value": "FLASHINFER"}]  # fmt: skip
    assert set(model) == {"args", "env"}  # nothing else of the predictor is touched


def test_a_custom_container_is_patched_in_its_list() -> None:
    sidecar = {"name": "proxy", "image": "envoy", "args": ["--max-num-seqs=1"]}
    engine = {"name": "kserve-container", "image": "vllm/vllm-openai", "command": ["vllm"],
              "args": ["serve", "/mnt/models", "--max-num-seqs", "256"]}  # fmt: skip
    isvc = {"spec": {"predictor": {"containers": [sidecar, engine]}}}
    patch = isvc_patch(isvc, {"max_num_seqs": 32, "VLLM_X": "y"})
    assert patch == {"spec": {"predictor": {"containers": [sidecar, {
        **engine, "args": ["serve", "/mnt/models", "--max-num-seqs=32"],
        "env": [{"name": "VLLM_X", "value": "y"}],
    }]}}}  # fmt: skip
    assert isvc["spec"]["predictor"]["containers"][1]["args"][-1] == "256"  # not mutated
    assert isvc_restore_patch(isvc) == {"spec": {"predictor": {"containers": [sidecar, engine]}}}
    with pytest.raises(ValueError, match="no container 'engine'"):
        isvc_patch(isvc, {"max_num_seqs": 32}, container="engine")


def test_the_restore_patch_puts_back_absent_lists_as_absent() -> None:
    assert isvc_restore_patch(model_isvc(["--dtype=half"])) == {
        "spec": {"predictor": {"model": {"args": ["--dtype=half"], "env": None}}}
    }


# Options a setting does not name, as they sit in an InferenceService's args: each a group of
# tokens that removing the setting's flags must leave whole.
_VALUE = st.one_of(st.from_regex(r"[a-z0-9/._]{1,8}", fullmatch=True),
                   st.integers(-5, 5000).map(str))  # fmt: skip
_OTHER = st.sampled_from(["dtype", "port", "model-name", "trust-remote-code", "download-dir"])
_UNRELATED = st.one_of(
    st.tuples(_OTHER, _VALUE).map(lambda p: [f"--{p[0]}", p[1]]),
    st.tuples(_OTHER, _VALUE).map(lambda p: [f"--{p[0]}={p[1]}"]),
    _OTHER.map(lambda name: [f"--{name}"]),
)
_NAMES = ["max_num_seqs", "enable_prefix_caching", "cudagraph_capture_sizes", "seed"]
_SETTING_VALUE = {
    "max_num_seqs": st.one_of(st.none(), st.integers(1, 1024)),
    "enable_prefix_caching": st.one_of(st.none(), st.booleans()),
    "cudagraph_capture_sizes": st.lists(st.integers(1, 512), min_size=1, max_size=3),
    "seed": st.integers(-3, 3),
}


def _occurrences(name: str) -> st.SearchStrategy[list[str]]:
    """The ways a flag the setting names may already sit in the args."""
    dash = name.replace("_", "-")
    if name == "enable_prefix_caching":
        return st.sampled_from([[f"--{dash}"], [f"--no-{dash}"], [f"--{dash}=true"],
                                [f"--{dash}", "false"], [f"--{name}"]])  # fmt: skip
    if name == "cudagraph_capture_sizes":
        return st.lists(_VALUE.filter(str.isdigit), min_size=1, max_size=3).map(
            lambda vs: [f"--{dash}", *vs]
        )
    return st.one_of(
        _VALUE.map(lambda v: [f"--{dash}", v]), _VALUE.map(lambda v: [f"--{dash}={v}"]),
        _VALUE.map(lambda v: [f"--{name}", v]),
    )  # fmt: skip


@st.composite
def patched_services(draw: st.DrawFn) -> tuple[dict[str, Any], list[list[str]], list[Any]]:
    names = draw(st.lists(st.sampled_from(_NAMES), unique=True, max_size=4))
    setting: dict[str, Any] = {n: draw(_SETTING_VALUE[n]) for n in names}
    env_names = draw(st.lists(st.sampled_from(["VLLM_A", "VLLM_B"]), unique=True, max_size=2))
    setting |= {n: draw(st.one_of(st.booleans(), _VALUE)) for n in env_names}
    groups = [(draw(_UNRELATED), False) for _ in range(draw(st.integers(0, 6)))]
    groups += [(draw(_occurrences(n)), True) for n in names for _ in range(draw(st.integers(0, 2)))]
    order = draw(st.permutations(groups))
    unrelated = [g for g, ours in order if not ours]
    env_other = [{"name": f"OTHER_{i}", "value": str(i)} for i in range(draw(st.integers(0, 3)))]
    env = env_other + [{"name": n, "value": "old"} for n in env_names if draw(st.booleans())]
    env = draw(st.permutations(env))
    args = [token for g, _ in order for token in g]
    kept = [e for e in env if e["name"].startswith("OTHER_")]
    return {"setting": setting, "isvc": model_isvc(args, env)}, unrelated, kept


def _last_boolean(args: list[str], name: str) -> bool | None:
    found = None
    for token in args:
        if token == f"--{name}":
            found = True
        elif token == f"--no-{name}":
            found = False
    return found


@settings(max_examples=300, deadline=None)
@given(patched_services())
def test_a_patch_keeps_every_unrelated_entry_and_names_each_flag_once(
    case: tuple[dict[str, Any], list[list[str]], list[Any]],
) -> None:
    given_, unrelated, env_other = case
    setting = given_["setting"]
    model = isvc_patch(given_["isvc"], setting)["spec"]["predictor"]["model"]
    engine = {k: v for k, v in setting.items() if not k.startswith("VLLM_")}
    ours = isvc_patch(None, engine)["spec"]["predictor"]["model"].get("args", [])
    if engine:
        assert model["args"] == [t for g in unrelated for t in g] + ours
    for name, value in engine.items():
        dash = name.replace("_", "-")
        named = [t for t in model["args"] if t.split("=")[0] in (f"--{dash}", f"--no-{dash}")]
        assert len(named) == (0 if value is None else 1)
        if isinstance(value, bool):
            assert _last_boolean(model["args"], dash) is value
    env = {k: v for k, v in setting.items() if k.startswith("VLLM_")}
    if env:
        assert model["env"] == env_other + [{"name": k, "value": vllm_env(env)[k]} for k in env]


# -- the simulator ----------------------------------------------------------------------------


def test_shared_names_map_directly_and_the_rest_is_noted() -> None:
    out, notes = sim_settings(
        {"model": "m", "max_num_seqs": 256},
        {"max_num_seqs": 8, "max_model_len": 2048, "block_size": 32, "seed": 7,
         "gpu_memory_utilization": 0.8, "num_gpu_blocks_override": 500,
         "max_num_batched_tokens": 4096, "enable_prefix_caching": True, "enable_chunked_prefill":
         True, "VLLM_ATTENTION_BACKEND": "FLASHINFER", "kv_cache_dtype": None},
    )  # fmt: skip
    assert out == {"model": "m", "max_num_seqs": 8, "max_model_len": 2048, "block_size": 32,
                   "seed": 7, "gpu_memory_utilization": 0.8, "num_gpu_blocks_override": 500,
                   "max_num_batched_tokens": 4096}  # fmt: skip
    assert notes == ["not modelled by the simulator: enable_prefix_caching",
                     "not modelled by the simulator: VLLM_ATTENTION_BACKEND"]  # fmt: skip
    SimSettings.model_validate(out)


def test_tensor_parallelism_is_a_larger_faster_gpu_less_the_all_reduce() -> None:
    out, notes = sim_settings({"step_base_s": 0.02}, {"tensor_parallel_size": 4})
    factor = (1 + 0.05 * 3) / 4
    assert out["gpu_memory_gib"] == 320.0
    assert out["step_base_s"] == pytest.approx(0.02 * factor)
    assert out["per_seq_s"] == pytest.approx(0.00005 * factor)
    assert out["prefill_per_token_s"] == pytest.approx(0.00002 * factor)
    assert notes == ["tensor_parallel_size 4: simulated as one GPU with 4× the memory and step "
                     "costs × 0.287"]  # fmt: skip
    assert sim_settings({}, {"tensor_parallel_size": 1}) == (
        {"gpu_memory_gib": 80.0, "step_base_s": 0.01, "per_seq_s": 0.00005,
         "prefill_per_token_s": 0.00002}, [])  # fmt: skip
    with pytest.raises(ValueError, match="whole number"):
        sim_settings({}, {"tensor_parallel_size": 1.5})


def test_without_chunked_prefill_the_budget_follows_vllm() -> None:
    out, notes = sim_settings({"max_model_len": 8192}, {"enable_chunked_prefill": False})
    assert out["max_num_batched_tokens"] == 8192  # vLLM's default without chunking
    assert notes[0].startswith("enable_chunked_prefill false: only vLLM's budget rule")
    out, _ = sim_settings({}, {"max_num_batched_tokens": 8192, "enable_chunked_prefill": False})
    assert out["max_num_batched_tokens"] == 8192
    with pytest.raises(ValueError, match=r"max_num_batched_tokens \(1024\) is smaller than "
                                         r"max_model_len \(4096\)"):  # fmt: skip
        sim_settings({}, {"enable_chunked_prefill": False, "max_num_batched_tokens": 1024})


@settings(max_examples=60, deadline=None)
@given(
    seqs=st.integers(1, 512),
    length=st.sampled_from([1024, 2048, 4096]),
    tp=st.integers(1, 8),
    utilization=st.sampled_from([0.5, 0.9, 0.95]),
)
def test_the_simulator_reads_back_exactly_the_settings_it_is_given(
    seqs: int, length: int, tp: int, utilization: float
) -> None:
    setting = {"max_num_seqs": seqs, "max_model_len": length, "tensor_parallel_size": tp,
               "gpu_memory_utilization": utilization}  # fmt: skip
    out, _ = sim_settings({"api_key": "k" * 12}, setting)
    args = sim_cli_args(out)
    assert "k" * 12 not in args
    parsed = settings_from_cli(sim.make_context("sim", args).params)
    assert parsed.model_dump(exclude={"api_key"}) == SimSettings.model_validate(out).model_dump(
        exclude={"api_key"}
    )
