"""Scenario files (scenarios/*.yaml): what to load, how hard, how long, judged by which policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from harness.sim.settings import SimSettings
from harness.spec.collect import CollectSpec
from harness.spec.config import StrictModel, apply_overrides, read_yaml, validate
from harness.spec.load import LoadSpec
from harness.spec.workload import SyntheticWorkload, WorkloadSpec

SCENARIO_SCHEMA = 1


def check_base_url(url: str) -> str:
    """An OpenAI base URL as clients take it (http[s]://host[:port][/path]), without the
    trailing slash; ValueError saying what was expected otherwise."""
    example = "such as http://127.0.0.1:8000/v1"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number or is out of range
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc}): expected one {example}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL {example}")
    if not parts.hostname:
        raise ValueError(f"the URL names no host: expected one {example}")
    if port == 0:
        raise ValueError(f"port 0 cannot be reached: expected a URL {example}")
    if parts.query or parts.fragment:
        raise ValueError(f"a base URL takes no ?query or #fragment: expected one {example}")
    return url.rstrip("/")


class TargetSpec(StrictModel):
    """The OpenAI-compatible endpoint under test."""

    url: str | None = Field(
        default=None,
        description="OpenAI base URL, e.g. http://host:8000/v1; null starts the built-in simulator",
    )
    model: str | None = Field(
        default=None, description="model name to request; null: the one model /v1/models lists"
    )
    api: Literal["chat", "completions"] = Field(
        default="chat", description="/v1/chat/completions or /v1/completions"
    )
    stream: bool = Field(default=True, description="stream tokens (needed for TTFT, ITL, TPOT)")
    api_key_env: str = Field(
        default="OPENAI_API_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="environment variable holding the API key, sent as a bearer token",
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=3600, description="TCP connect deadline"
    )
    read_timeout_s: float = Field(
        default=300.0,
        gt=0,
        le=86_400,
        description="longest silence between bytes (long prefills need room)",
    )
    request_timeout_s: float = Field(
        default=600.0, gt=0, le=7 * 86_400, description="deadline for one whole request"
    )
    sim: dict[str, Any] = Field(
        default_factory=dict,
        description="settings of the built-in simulator (see `harness sim --help`), "
        "used only when url is null",
    )
    expect_backend: list[str] = Field(
        default_factory=list,
        description="behind a gateway (LiteLLM): the api base(s) or deployment id(s) that "
        "should serve every request; a request the gateway says another served counts as "
        "fallback-served (fallback_rate)",
    )

    @field_validator("expect_backend", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise ValueError("expected an api base or deployment id, or a list of them")
        return value

    @field_validator("expect_backend")
    @classmethod
    def _named(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.strip() or "?" in item or "#" in item:
                raise ValueError(
                    f"{item!r}: expected an api base such as http://10.0.0.7:8000/v1 (no ?query) "
                    "or a deployment id"
                )
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)

    @field_validator("sim")
    @classmethod
    def _sim_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        SimSettings.model_validate(value)
        return value


class Scenario(StrictModel):
    """One load run, as users write it."""

    schema_version: Literal[1] = Field(default=1, alias="schema", description="file format version")
    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    target: TargetSpec = Field(default_factory=TargetSpec)
    workload: WorkloadSpec = Field(default_factory=SyntheticWorkload)
    load: LoadSpec
    collect: CollectSpec = Field(
        default_factory=CollectSpec,
        description="server and GPU metrics gathered beside the client's records",
    )
    policy: str = Field(
        default="../slo/runbook.yaml",
        description="SLO policy file, relative to the scenario file",
    )


def load_scenario(path: Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override (`--set`), and validate a scenario; errors name file and key path."""
    data = read_yaml(path)
    if overrides:
        data = apply_overrides(data, overrides, str(path))
    return validate(Scenario, data, str(path))


def policy_path(scenario_file: Path, scenario: Scenario) -> Path:
    """The policy file a scenario names, resolved against the scenario's folder."""
    ref = Path(scenario.policy)
    return ref if ref.is_absolute() else (scenario_file.parent / ref).resolve()
