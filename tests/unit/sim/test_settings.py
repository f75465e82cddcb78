"""SimSettings, its KV-cache sizing, and the CLI built from it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from harness.sim.command import settings_from_cli, sim
from harness.sim.settings import API_KEY_ENV, SimSettings, ms_to_seconds, seconds_to_ms


def _parse(args: list[str]) -> SimSettings:
    ctx = sim.make_context("sim", args)
    return settings_from_cli(ctx.params)


def test_defaults_size_the_kv_cache_from_gpu_memory() -> None:
    s = SimSettings()
    # (80 GiB * 0.9 - 16 GiB) / 128 KiB per token / 16 tokens per block
    assert s.num_kv_blocks == 56 * 8192 // 16
    assert SimSettings(num_gpu_blocks_override=300).num_kv_blocks == 300
    # A cache larger than a full batch of full-length requests could ever use is capped.
    assert SimSettings(max_num_seqs=2, max_model_len=1024).num_kv_blocks == 2 * 1024 // 16


def test_settings_refuse_a_cache_too_small_for_one_request() -> None:
    with pytest.raises(ValidationError, match="exceeds the KV cache"):
        SimSettings(num_gpu_blocks_override=10, max_model_len=4096)
    with pytest.raises(ValidationError, match="no GPU memory"):
        SimSettings(model_weights_gib=80)
    with pytest.raises(ValidationError, match="extra"):
        SimSettings.model_validate({"max_num_seq": 3})


def test_defaults_round_trip_through_the_cli() -> None:
    assert _parse([]) == SimSettings()
    assert _parse(SimSettings().to_cli_args()) == SimSettings()


def test_every_setting_round_trips_through_to_cli_args(monkeypatch: pytest.MonkeyPatch) -> None:
    s = SimSettings(
        host="0.0.0.0",
        port=0,
        model="m",
        api_key=SecretStr("k"),
        max_num_seqs=7,
        max_num_batched_tokens=512,
        max_model_len=1024,
        num_gpu_blocks_override=100,
        step_base_s=0.0123,
        per_seq_s=0.00007,
        prefill_per_token_s=1e-05,
        eos_probability=0.25,
        seed=3,
        error_rate=0.1,
        stall_s=0.5,
        extra_ttft_s=0.2,
    )
    args = s.to_cli_args()
    assert "k" not in args  # the key travels in the environment only
    assert args[args.index("--step-base-ms") + 1] == "12.3"
    for key, value in s.to_cli_env().items():
        monkeypatch.setenv(key, value)
    assert _parse(args) == s


@given(st.floats(min_value=0, max_value=100, allow_nan=False, allow_infinity=False))
def test_milliseconds_round_trip_exactly(seconds: float) -> None:
    assert ms_to_seconds(seconds_to_ms(seconds)) == seconds


def test_bad_cli_values_are_usage_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(sim, ["--error-rate", "1.5"])
    assert result.exit_code == 2
    assert "--error-rate" in result.output
    result = runner.invoke(sim, ["--step-base-ms", "soon"])
    assert result.exit_code == 2
    assert "milliseconds" in result.output


def test_api_key_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    key = _parse([]).api_key
    assert key is not None
    assert key.get_secret_value() == "from-env"
    assert "from-env" not in repr(_parse([]))
