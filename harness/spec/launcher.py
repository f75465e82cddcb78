"""The study file's `launcher:` section: how `harness tune` starts a server with each setting,
a tagged union on `type`.

- ``sim``: the built-in simulator, a process on this machine (demos, tests, dry runs of a
  study); vLLM settings are mapped onto its knobs, the rest noted as not modelled.
- ``local``: ``vllm serve`` (or any command taking vLLM's flags) on this machine, one
  process per setting, stopped before the next.
- ``kserve``: an existing InferenceService, patched with each setting and rolled out.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from harness.sim.settings import SimSettings
from harness.spec.config import StrictModel
from harness.spec.scenario import check_base_url

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A Kubernetes object name (RFC 1123 label, as KServe requires of an InferenceService).
_K8S_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SimLauncherSpec(StrictModel):
    """The built-in simulator, started per setting with the setting mapped onto its knobs."""

    type: Literal["sim"] = "sim"
    sim: dict[str, Any] = Field(
        default_factory=dict,
        description="base settings of the simulator (see `harness sim --help`); each setting "
        "is applied on top of them",
    )
    startup_timeout_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("sim")
    @classmethod
    def _sim_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        SimSettings.model_validate(value)
        return value


class LocalLauncherSpec(StrictModel):
    """``vllm serve MODEL`` on this machine, one process per setting."""

    type: Literal["local"] = "local"
    model: str = Field(min_length=1, description="the model vllm serves (name or path)")
    command: list[str] = Field(
        default_factory=lambda: ["vllm", "serve"],
        min_length=1,
        description="the program and its leading arguments; the model follows them",
    )
    args: list[str] = Field(
        default_factory=list, description="flags every setting gets, before the setting's own"
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="environment variables added for every setting"
    )
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=0, ge=0, le=65535, description="0: a free port per launch")
    startup_timeout_s: float = Field(
        default=900.0, gt=0, le=86_400, description="model download, load and warm-up"
    )
    stop_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="wait after each signal (SIGINT, SIGTERM)"
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=_ENV_NAME.pattern,
        description="variable holding the key the server requires (passed as VLLM_API_KEY, "
        "never on the command line)",
    )

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value


class KServeLauncherSpec(StrictModel):
    """An existing InferenceService: each setting patched into its predictor's args and env."""

    type: Literal["kserve"] = "kserve"
    name: str = Field(min_length=1, max_length=63, pattern=_K8S_NAME)
    namespace: str = Field(default="default", min_length=1, max_length=63, pattern=_K8S_NAME)
    container: str = Field(
        default="kserve-container",
        min_length=1,
        description="the container patched when the predictor lists containers (custom "
        "container); unused for spec.predictor.model",
    )
    url: str | None = Field(
        default=None,
        description="OpenAI base URL to load; null: the InferenceService's status.url + /openai/v1",
    )
    ready_timeout_s: float = Field(
        default=900.0, gt=0, le=86_400, description="wait for the new revision to be Ready"
    )
    kubeconfig: str | None = Field(
        default=None, description="null: the in-cluster service account, else ~/.kube/config"
    )
    model: str | None = Field(
        default=None, description="model name to request; null: the InferenceService's name"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)


LauncherSpec = Annotated[
    SimLauncherSpec | LocalLauncherSpec | KServeLauncherSpec, Field(discriminator="type")
]
