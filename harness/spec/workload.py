"""The `workload:` section of a scenario: what each request asks for, a tagged union on `type`.

Token counts are whole numbers of at least 1, written either as a plain number or as a
distribution drawn per request from the workload's seed. Validation here is pure: a file a
workload names is opened when the workload is built (harness.workload.build), so a scenario
can be checked, stored and re-read without its dataset.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Self

import numpy as np
from pydantic import (
    BeforeValidator,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    WrapSerializer,
    field_validator,
    model_validator,
)

from harness.spec.config import StrictModel
from harness.spec.vocabulary import VOCABULARY

MAX_TOKENS = 1_000_000
"""Largest token count a distribution may produce: draws beyond it are clipped."""

_COUNT_HINT = (
    "a whole number (1 or more) or a distribution such as {type: uniform, min: 64, max: 256}"
)


class FixedLength(StrictModel):
    """Always `value`."""

    type: Literal["fixed"] = "fixed"
    value: int = Field(ge=1, le=MAX_TOKENS)

    def draw(self, rng: np.random.Generator) -> int:
        # Takes nothing from rng: a fixed length leaves the prompt words as they were before
        # distributions existed, so old scenarios keep sending the same text.
        del rng
        return self.value

    @property
    def bounds(self) -> tuple[int, int]:
        return self.value, self.value


class UniformLength(StrictModel):
    """Every whole number from `min` to `max` (both included) equally likely."""

    type: Literal["uniform"] = "uniform"
    min: int = Field(ge=1, le=MAX_TOKENS)
    max: int = Field(ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def draw(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.min, self.max + 1))

    @property
    def bounds(self) -> tuple[int, int]:
        return self.min, self.max


class _Clipped(StrictModel):
    """A continuous draw rounded to a whole number and clipped to [min, max]."""

    min: int = Field(default=1, ge=1, le=MAX_TOKENS, description="draws below are raised to it")
    max: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS, description="draws above are lowered to it"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    @property
    def bounds(self) -> tuple[int, int]:
        return self.min, self.max if self.max is not None else MAX_TOKENS

    def _clip(self, value: float) -> int:
        lo, hi = self.bounds
        return min(max(round(value), lo), hi)


class NormalLength(_Clipped):
    """Normal with `mean` and `std`, rounded and clipped (clipping moves the mean a little)."""

    type: Literal["normal"] = "normal"
    mean: float = Field(gt=0, le=MAX_TOKENS)
    std: float = Field(ge=0, le=MAX_TOKENS)

    def draw(self, rng: np.random.Generator) -> int:
        return self._clip(rng.normal(self.mean, self.std))


class LogNormalLength(_Clipped):
    """Lognormal with the given `mean` of the lengths and either `sigma` (the spread of their
    logarithm, as numpy's) or `std` (the spread of the lengths); right-skewed like real
    prompt and answer lengths."""

    type: Literal["lognormal"] = "lognormal"
    mean: float = Field(gt=0, le=MAX_TOKENS, description="mean length")
    sigma: float | None = Field(default=None, ge=0, le=10, description="std of log length")
    std: float | None = Field(default=None, ge=0, le=MAX_TOKENS, description="std of length")

    @model_validator(mode="after")
    def _one_spread(self) -> Self:
        if (self.sigma is None) == (self.std is None):
            raise ValueError("give exactly one of sigma (of the log length) or std (of the length)")
        return self

    @property
    def log_params(self) -> tuple[float, float]:
        """(mu, sigma) of the underlying normal, so that the lengths have the mean asked."""
        if self.sigma is not None:
            sigma = self.sigma
        else:
            assert self.std is not None  # _one_spread
            sigma = math.sqrt(math.log1p((self.std / self.mean) ** 2))
        return math.log(self.mean) - sigma * sigma / 2.0, sigma

    def draw(self, rng: np.random.Generator) -> int:
        mu, sigma = self.log_params
        return self._clip(rng.lognormal(mu, sigma))


Distribution = Annotated[
    FixedLength | UniformLength | NormalLength | LogNormalLength, Field(discriminator="type")
]


def _plain_count(value: object) -> object:
    """A bare number is a fixed length; anything else must be a distribution mapping."""
    if isinstance(value, bool) or not isinstance(value, int | dict | StrictModel):
        raise ValueError(f"expected {_COUNT_HINT}")
    if isinstance(value, int):
        if not 1 <= value <= MAX_TOKENS:
            raise ValueError(f"expected a whole number from 1 to {MAX_TOKENS}")
        return FixedLength(value=value)
    return value


def _dump_count(
    value: FixedLength | UniformLength | NormalLength | LogNormalLength,
    handler: SerializerFunctionWrapHandler,
    info: SerializationInfo,
) -> Any:
    """Fixed lengths are written back as the plain number users wrote (manifests stay as before)."""
    del info
    return value.value if isinstance(value, FixedLength) else handler(value)


Count = Annotated[
    Distribution, BeforeValidator(_plain_count), WrapSerializer(_dump_count, when_used="always")
]
"""A whole number of at least 1, fixed (`128`) or drawn per use (`{type: normal, ...}`)."""


class _WorkloadBase(StrictModel):
    """What every workload kind shares: sampling settings and the seed."""

    ignore_eos: bool = Field(
        default=True, description="ask the server to generate exactly max_tokens (vLLM extension)"
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = Field(
        default=0,
        ge=0,
        le=2**63 - 1,
        description="seed of prompts, lengths and dataset order: same seed, same requests",
    )
    tokenizer: str | None = Field(
        default=None,
        min_length=1,
        description="count prompt lengths in the model's tokens: a local tokenizer.json or "
        "model folder (relative to the scenario file), or 'target' for the target's own "
        "/tokenize; null: lengths are words",
    )


class SyntheticWorkload(_WorkloadBase):
    """Random-word prompts of `prompt_tokens` words, `max_tokens` generated."""

    type: Literal["synthetic"] = "synthetic"
    prompt_tokens: Count = Field(default=FixedLength(value=128), description="prompt length, words")
    max_tokens: Count = Field(default=FixedLength(value=64), description="tokens to generate")


class _DatasetBase(_WorkloadBase):
    path: str = Field(min_length=1, description="dataset file, relative to the scenario file")

    @field_validator("tokenizer")
    @classmethod
    def _generated_only(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "applies to generated prompts (synthetic, shared_prefix, multi_turn); a "
                "dataset's prompts are sent as they are"
            )
        return value


class ShareGPTWorkload(_DatasetBase):
    """Conversations in ShareGPT JSON: the first human turn is the prompt and, unless
    `max_tokens` is set, the length of the answer that followed it is the output length
    (vLLM's benchmark_serving). Lengths are counted in words: the harness has no tokenizer."""

    type: Literal["sharegpt"] = "sharegpt"
    max_tokens: Count | None = Field(
        default=None, description="override of the output length; null: the dataset's answer"
    )
    min_tokens: int = Field(
        default=4, ge=1, description="skip prompts (and dataset answers) shorter than this"
    )
    max_prompt_tokens: int = Field(default=1024, ge=1, description="skip longer prompts")
    max_total_tokens: int = Field(
        default=2048, ge=2, description="skip pairs whose prompt and output exceed this together"
    )


class JsonlWorkload(_DatasetBase):
    """One JSON object a line; `field` holds the prompt text."""

    type: Literal["jsonl"] = "jsonl"
    field: str = Field(default="prompt", min_length=1, description="key of the prompt text")
    max_tokens_field: str | None = Field(
        default=None, description="key of each line's output length; null: use max_tokens"
    )
    max_tokens: Count = Field(
        default=FixedLength(value=64), description="output length when max_tokens_field is null"
    )


def prefix_words_needed(num_prefixes: int, vocabulary: int = len(VOCABULARY)) -> int:
    """Fewest leading words from ``vocabulary`` words that can tell `num_prefixes` prefixes
    apart."""
    words, distinct = 1, vocabulary
    while distinct < num_prefixes:
        words += 1
        distinct *= vocabulary
    return words


class SharedPrefixWorkload(_WorkloadBase):
    """`num_prefixes` distinct prefixes; each request is one prefix then its own suffix, so a
    prefix cache can reuse the prefix. Every group is used once in every `num_prefixes`
    requests, in a seeded random order."""

    type: Literal["shared_prefix"] = "shared_prefix"
    num_prefixes: int = Field(ge=1, le=100_000, description="distinct prefixes (groups)")
    prefix_tokens: Count = Field(description="prefix length, words (drawn once per group)")
    suffix_tokens: Count = Field(
        default=FixedLength(value=64), description="per-request text after the prefix, words"
    )
    max_tokens: Count = Field(default=FixedLength(value=64), description="tokens to generate")

    @field_validator("prefix_tokens")
    @classmethod
    def _prefixes_can_differ(cls, value: Distribution, info: ValidationInfo) -> Distribution:
        num = info.data.get("num_prefixes")
        need = prefix_words_needed(num) if isinstance(num, int) else 1
        if value.bounds[0] < need:
            raise ValueError(
                f"may be as short as {value.bounds[0]} words, too few to tell {num} prefixes apart:"
                f" expected at least {need}"
            )
        return value


class MultiTurnWorkload(_WorkloadBase):
    """Conversations: each turn resends the whole history (user turns and the server's
    answers) plus a new user turn, as a chat client does."""

    type: Literal["multi_turn"] = "multi_turn"
    turns: Count = Field(default=FixedLength(value=3), description="user turns a session")
    prompt_tokens: Count = Field(
        default=FixedLength(value=64), description="new user text a turn, words"
    )
    max_tokens: Count = Field(
        default=FixedLength(value=64), description="tokens to generate a turn"
    )
    think_time_s: float = Field(
        default=0.0, ge=0.0, le=3600.0, description="pause before every turn after the first"
    )


WorkloadSpec = Annotated[
    SyntheticWorkload | ShareGPTWorkload | JsonlWorkload | SharedPrefixWorkload | MultiTurnWorkload,
    Field(discriminator="type"),
]
"""Every workload kind, chosen by `type`."""
