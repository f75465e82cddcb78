"""Every knob of the simulator, in one frozen model shared by the CLI, the engine and tests.

Durations are kept in seconds here; on the command line a field named ``*_s`` becomes
``--*-ms`` in milliseconds, the unit people think of step times in. The conversion goes
through ``Decimal`` so that ``to_cli_args`` and the CLI round-trip a float exactly.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

GIB = 1 << 30
API_KEY_ENV = "HARNESS_SIM_API_KEY"
"""Environment variable the CLI reads the API key from, so it stays out of argv."""

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class SimSettings(BaseModel):
    """Engine, server and fault settings of one simulator process.

    Engine defaults follow the runbook's vLLM settings for a Llama-3-8B in fp16 on an
    80 GiB GPU; step timings are picked so that light load looks like such a model
    (about 10 ms inter-token latency, prefill of 1000 tokens in about 20 ms).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    model: str = Field("sim-llama-3-8b", min_length=1, description="Served model name.")
    api_key: SecretStr | None = Field(
        None, description="When set, /v1 requests need 'Authorization: Bearer <key>'."
    )

    max_num_seqs: int = Field(256, ge=1, description="Most sequences in one batch.")
    max_num_batched_tokens: int = Field(
        8192, ge=1, description="Token budget of one step, decodes and prefill chunks."
    )
    max_model_len: int = Field(4096, ge=2, description="Longest prompt plus output, in tokens.")
    block_size: int = Field(16, ge=1, description="Tokens per KV-cache block.")
    gpu_memory_gib: float = Field(80.0, gt=0, description="Memory of the simulated GPU.")
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1, description="Share of GPU memory the engine may use."
    )
    model_weights_gib: float = Field(16.0, ge=0, description="Memory taken by the weights.")
    kv_bytes_per_token: int = Field(
        131072, ge=1, description="KV-cache bytes per token (all layers, K and V)."
    )
    num_gpu_blocks_override: int | None = Field(
        None, ge=1, description="KV-cache blocks to use instead of the memory-derived count."
    )

    step_base_s: Seconds = Field(0.010, description="Fixed cost of one engine step.")
    per_seq_s: Seconds = Field(0.00005, description="Step cost per sequence in the batch.")
    prefill_per_token_s: Seconds = Field(
        0.00002, description="Step cost per prefill token in the batch."
    )
    default_max_tokens: int = Field(
        64, ge=1, description="Output length when max_tokens is absent."
    )
    eos_probability: Probability = Field(
        0.0, description="Chance per output token to stop early (finish_reason 'stop')."
    )
    seed: int = Field(0, description="Seed of the random draws (EOS, faults).")

    error_rate: Probability = Field(0.0, description="Share of requests answered HTTP 500.")
    error_burst_s: Seconds = Field(
        0.0, description="With > 0, error_rate applies only in bursts this long (an incident)."
    )
    error_burst_every_s: Seconds = Field(
        20.0, description="A burst starts this often, the first this long after start-up."
    )
    rate_limit_rate: Probability = Field(0.0, description="Share of requests answered HTTP 429.")
    retry_after_seconds: int = Field(1, ge=0, description="Retry-After header sent with a 429.")
    stall_rate: Probability = Field(0.0, description="Share of responses that pause mid-way.")
    stall_s: Seconds = Field(1.0, description="How long a stalled response pauses.")
    cut_rate: Probability = Field(
        0.0, description="Share of responses whose connection is closed mid-way."
    )
    malformed_rate: Probability = Field(
        0.0, description="Share of streams with one chunk that is not valid JSON."
    )
    extra_ttft_s: Seconds = Field(
        0.0, description="Delay before a request reaches the engine (a slow canary)."
    )

    @model_validator(mode="after")
    def _kv_cache_fits_one_sequence(self) -> Self:
        usable = self.gpu_memory_gib * self.gpu_memory_utilization
        if usable <= self.model_weights_gib and self.num_gpu_blocks_override is None:
            raise ValueError("model weights leave no GPU memory for the KV cache")
        if self.num_kv_blocks * self.block_size < self.max_model_len:
            # vLLM refuses to start in this case too: one maximal request could never run.
            raise ValueError(
                f"max_model_len {self.max_model_len} exceeds the KV cache "
                f"({self.num_kv_blocks * self.block_size} tokens)"
            )
        return self

    @property
    def num_kv_blocks(self) -> int:
        """KV-cache blocks: from free GPU memory, capped at what a full batch could ever use."""
        if self.num_gpu_blocks_override is not None:
            return self.num_gpu_blocks_override
        free = self.gpu_memory_gib * self.gpu_memory_utilization - self.model_weights_gib
        tokens = int(free * GIB) // self.kv_bytes_per_token
        cap = -(-self.max_num_seqs * self.max_model_len // self.block_size)
        return min(tokens // self.block_size, cap)

    def to_cli_args(self) -> list[str]:
        """Arguments for ``harness sim`` that reproduce these settings.

        The API key is left out so it never shows in a process list or a logged
        command line; pass ``to_cli_env()`` in the child's environment as well.
        """
        args: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or name == "api_key":
                continue
            flag, in_ms = cli_flag(name)
            args += [flag, seconds_to_ms(value) if in_ms else str(value)]
        return args

    def to_cli_env(self) -> dict[str, str]:
        """Environment for the child process: the API key, when one is set."""
        if self.api_key is None:
            return {}
        return {API_KEY_ENV: self.api_key.get_secret_value()}


def cli_flag(field_name: str) -> tuple[str, bool]:
    """The CLI flag of a settings field, and whether it is given in milliseconds."""
    if field_name.endswith("_s"):
        return "--" + field_name[:-2].replace("_", "-") + "-ms", True
    return "--" + field_name.replace("_", "-"), False


def seconds_to_ms(seconds: float) -> str:
    """Milliseconds as exact decimal text, so the CLI gets back the very same float."""
    return format((Decimal(repr(seconds)) * 1000).normalize(), "f")


def ms_to_seconds(text: str) -> float:
    """Seconds from milliseconds given as text; the inverse of ``seconds_to_ms``."""
    return float(Decimal(text) / 1000)
