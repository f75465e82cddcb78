"""The launchers' parts that need no server: the `launcher:` section's errors, the wait for a
stopped server's GPU memory (NVML faked: no GPU here), the log tail a failed launch carries,
and when a patched InferenceService counts as running its new setting."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.gate.kserve import ServiceState
from harness.spec.config import StrictModel, validate
from harness.spec.launcher import (
    KServeLauncherSpec,
    LauncherSpec,
    LocalLauncherSpec,
    SimLauncherSpec,
)
from harness.tune.contract import log_tail, secret_values
from harness.tune.kserve_launch import _ready_check
from harness.tune.process import SimLauncher, exit_text, wait_gpu_released

GIB = 1 << 30


class _File(StrictModel):
    launcher: LauncherSpec


def launcher(data: dict[str, Any]) -> Any:
    return validate(_File, {"launcher": data}, "study.yaml").launcher


def test_each_launcher_kind_reads_with_its_defaults() -> None:
    sim = launcher({"type": "sim", "sim": {"max_num_seqs": 8}})
    assert isinstance(sim, SimLauncherSpec)
    assert sim.startup_timeout_s == 30
    local = launcher({"type": "local", "model": "meta-llama/Llama-3.1-8B-Instruct"})
    assert isinstance(local, LocalLauncherSpec)
    assert (local.command, local.host, local.port, local.startup_timeout_s,
            local.stop_timeout_s) == (["vllm", "serve"], "127.0.0.1", 0, 900, 30)  # fmt: skip
    kserve = launcher({"type": "kserve", "name": "llm", "url": "http://llm.example.com/v1/"})
    assert isinstance(kserve, KServeLauncherSpec)
    assert (kserve.namespace, kserve.container, kserve.url) == (
        "default",
        "kserve-container",
        "http://llm.example.com/v1",
    )


@pytest.mark.parametrize(
    ("data", "where", "said"),
    [
        ({"type": "local"}, "launcher.model", "required key is missing"),
        ({"type": "local", "model": "m", "port": 70000}, "launcher.port", "less than or equal"),
        ({"type": "local", "model": "m", "stop_timeout_s": True}, "launcher.stop_timeout_s",
         "a boolean where a number belongs"),
        ({"type": "local", "model": "m", "env": {"A-B": "1"}}, "launcher.env",
         "not an environment variable name"),
        ({"type": "sim", "sim": {"max_num_seqs": 0}}, "launcher.sim.max_num_seqs",
         "greater than or equal"),
        ({"type": "sim", "simm": {}}, "launcher.simm", "unknown key"),
        ({"type": "kserve", "name": "LLM"}, "launcher.name", "should match pattern"),
        ({"type": "kserve", "name": "llm", "url": "llm:80"}, "launcher.url", "http://"),
        ({"type": "docker"}, "launcher", "'sim', 'local', 'kserve'"),
    ],
)  # fmt: skip
def test_a_bad_launcher_names_the_file_key_and_expectation(
    data: dict[str, Any], where: str, said: str
) -> None:
    with pytest.raises(ConfigError) as error:
        launcher(data)
    text = str(error.value)
    assert text.startswith(f"study.yaml: {where}: "), text
    assert said in text


# -- GPU memory after a stop ------------------------------------------------------------------


class FakeNvml:
    """pynvml's calls the wait makes; GPU 1 runs ``held`` until ``polls_held`` reads passed."""

    class NVMLError(Exception):
        pass

    def __init__(self, held: dict[int, int], polls_held: int = 1_000_000,
                 init_fails: bool = False) -> None:  # fmt: skip
        self.held, self.polls_held, self.init_fails = held, polls_held, init_fails
        self.reads = 0
        self.shut = False

    def nvmlInit(self) -> None:
        if self.init_fails:
            raise self.NVMLError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:
        self.shut = True

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        if handle == 0:
            return [SimpleNamespace(pid=999, usedGpuMemory=GIB)]  # someone else's
        self.reads += 1
        if self.reads > self.polls_held:
            return []
        return [SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in self.held.items()]


def test_the_wait_ends_when_the_servers_processes_leave_the_gpu() -> None:
    nvml = FakeNvml({1234: 2 * GIB, 1240: None}, polls_held=3)  # type: ignore[dict-item]
    assert wait_gpu_released({1234, 1240}, 5.0, nvml, poll_s=0.01) is None
    assert nvml.reads == 4
    assert nvml.shut


def test_memory_still_held_at_the_timeout_is_said() -> None:
    nvml = FakeNvml({1234: 2 * GIB, 77: GIB})
    said = wait_gpu_released({1234, 1235}, 0.05, nvml, poll_s=0.01)
    assert said == "pid 1234 holds 2.0 GiB on GPU 1"


def test_without_nvml_the_wait_is_skipped_silently() -> None:
    assert wait_gpu_released({1}, 5.0, None) is None
    failing = FakeNvml({1: GIB}, init_fails=True)
    assert wait_gpu_released({1}, 5.0, failing) is None
    assert failing.reads == 0


def test_a_launcher_announces_memory_not_released() -> None:
    said: list[str] = []
    sim = SimLauncher(SimLauncherSpec(), said.append)
    sim.nvml, sim.gpu_release_timeout_s = FakeNvml({4321: 3 * GIB}), 0.05
    sim._await_gpu_release({4321})
    assert said == ["GPU memory not released 0.05 s after the built-in simulator stopped: "
                    "pid 4321 holds 3.0 GiB on GPU 1"]  # fmt: skip
    assert sim.gpu_not_released == "pid 4321 holds 3.0 GiB on GPU 1"


# -- log tails --------------------------------------------------------------------------------


def test_a_log_tail_is_the_last_lines_without_keys(tmp_path: Path) -> None:
    key = "sk-test-0123456789abcdef"
    log = tmp_path / "server.log"
    lines = [f"INFO line {i}" for i in range(50)] + ["", f"ERROR bad key {key}", "   "]
    log.write_text("\n".join(lines) + "\n")
    tail = log_tail(log, [key])
    assert len(tail) == 20
    assert tail[-1] == "ERROR bad key ***"
    assert tail[0] == "INFO line 31"
    assert log_tail(tmp_path / "missing.log") == []
    env = {"HF_TOKEN": "hf_abcdefghijkl", "CUDA_VISIBLE_DEVICES": "0", "API_KEY": "short"}
    assert secret_values(env) == ["hf_abcdefghijkl"]


def test_exit_texts() -> None:
    assert exit_text(1) == "with code 1"
    assert exit_text(-9) == "on SIGKILL"


# -- when a patched InferenceService runs its new setting -------------------------------------


def service(
    revision: int,
    ready: str = "True",
    raw: bool = False,
    generation: int | None = None,
    observed: int | None = None,
) -> ServiceState:
    latest = f"llm-predictor-{revision}"
    meta: dict[str, Any] = {"name": "llm", "namespace": "models"}
    if raw:
        meta["annotations"] = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    if generation is not None:
        meta["generation"] = generation
    status: dict[str, Any] = {
        "conditions": [{"type": t, "status": ready}
                       for t in ("Ready", "PredictorReady", "LatestDeploymentReady")],
        "url": "http://llm.models.example.com",
    }  # fmt: skip
    if observed is not None:
        status["observedGeneration"] = observed
    if not raw:
        traffic = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
        revisions = {"latestCreatedRevision": latest, "latestReadyRevision": latest}
        status["components"] = {"predictor": {**revisions, "traffic": traffic}}
    return ServiceState.from_object({"metadata": meta, "spec": {}, "status": status})


def test_serverless_waits_for_a_new_ready_revision_with_all_the_traffic() -> None:
    check = _ready_check(service(1), new_revision=True)
    assert check(service(1)) == (
        False,
        "revision llm-predictor-1 from before the patch is still the latest ready one",
    )
    assert check(service(2)) == (True, "100 % on revision llm-predictor-2")
    assert check(service(2, ready="Unknown"))[0] is False
    assert _ready_check(service(1), new_revision=False)(service(1))[0] is True


def test_raw_deployment_waits_for_the_patched_generation_to_be_observed() -> None:
    check = _ready_check(service(0, raw=True), new_revision=True)
    assert check(service(0, raw=True, generation=3, observed=2)) == (
        False,
        "KServe has not yet observed generation 3 (at 2)",
    )
    assert check(service(0, raw=True, generation=3, observed=3)) == (True, "ready")
    assert check(service(0, raw=True, generation=3)) == (True, "ready")  # not reported
    assert check(service(0, raw=True, ready="False", generation=3, observed=3))[0] is False
