"""The scenario's ``collect:`` section: which server and GPU metrics to gather, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from harness.spec.config import StrictModel

_ENV = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _http(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value


class ServerSource(StrictModel):
    """One server whose metrics are read: the engine, the gateway, or a DCGM exporter."""

    kind: Literal["auto", "vllm", "llamacpp", "litellm", "dcgm"] = Field(
        default="auto",
        description="metric names to read; auto: whichever of vllm:*, llamacpp:*, litellm_* "
        "or DCGM_FI_* the server exposes",
    )
    via: Literal["auto", "scrape", "prometheus"] = Field(
        default="auto",
        description="how to read it: auto is through collect.prometheus when one is named, "
        "else by scraping its page",
    )
    metrics_url: str | None = Field(
        default=None,
        description="page to scrape when no Prometheus is named; default: the target's "
        "/metrics (http://host:port/metrics for a target http://host:port/v1)",
    )
    selector: dict[str, str] = Field(
        default_factory=dict,
        description="label matchers, e.g. {namespace: prod, pod: '=~my-isvc-predictor-.*'}: "
        "a value is matched exactly, or as a regex when it starts with '=~'",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=_ENV,
        description="environment variable with a bearer token for the metrics page",
    )

    @field_validator("metrics_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http(value)


class PrometheusSpec(StrictModel):
    """A Prometheus that scrapes the servers; queried once the run is over."""

    url: str = Field(description="Prometheus base URL, e.g. http://prometheus:9090")
    timeout_s: float = Field(default=10.0, gt=0, description="deadline for one query")
    settle_s: float = Field(
        default=30.0,
        ge=0,
        description="how long to wait after the run for Prometheus to scrape past its end",
    )
    api_key_env: str | None = Field(
        default=None, pattern=_ENV, description="environment variable with a bearer token"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        checked = _http(value)
        assert checked is not None
        return checked.rstrip("/")


class CollectSpec(StrictModel):
    """What to collect beside the client's records."""

    @model_validator(mode="after")
    def _prometheus_named(self) -> CollectSpec:
        for i, src in enumerate(self.servers or []):
            if src.via == "prometheus" and self.prometheus is None:
                raise ValueError(f"servers[{i}].via is prometheus but collect.prometheus is unset")
        return self

    interval_s: float = Field(
        default=1.0, ge=0.05, le=60, description="scrape and GPU sampling interval"
    )
    servers: list[ServerSource] | None = Field(
        default=None,
        description="servers to read; null: the target itself (kind auto); [] reads none",
    )
    prometheus: PrometheusSpec | None = Field(
        default=None,
        description="read the servers through this Prometheus; null: scrape them directly",
    )
    gpu: Literal["auto", "nvml", "off"] = Field(
        default="auto",
        description="NVML sampling on this machine: auto (when a driver is present), nvml "
        "(expected: its absence is noted in the verdict), off",
    )

    @field_validator("gpu", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        # YAML 1.1 reads a bare `off` as false (and `on` as true).
        if value is False:
            return "off"
        return "nvml" if value is True else value

    gpu_devices: list[int] | None = Field(
        default=None, description="GPU indices to sample; null: all"
    )
    crosscheck_tolerance: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="relative gap allowed between client and server token counts",
    )
