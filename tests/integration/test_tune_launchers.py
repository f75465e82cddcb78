"""The launchers of `harness tune` against real processes and the Kubernetes API emulator.

``local`` runs a stand-in ``vllm`` put first on PATH: it records the argv and environment it
got, waits a while (so the wait for /health is seen to wait), then serves the built-in
simulator as its child; on request it exits at once with CUDA's out-of-memory line, or ignores
SIGINT (and SIGTERM) so the stop has to escalate. ``sim`` runs the simulator itself. ``kserve``
patches an InferenceService on the emulator, with a test-side KServe controller that makes a
new revision for every change of the predictor.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.kserve_controller import ARGS, ENV, NAME, NS, RevisingController, engine_isvc
from support.kube_emulator import ISVC, KubeEmulator

from harness.spec.launcher import KServeLauncherSpec, LocalLauncherSpec, SimLauncherSpec
from harness.tune.kserve_launch import KServeLauncher
from harness.tune.launch import LaunchFailed, make_launcher
from harness.tune.process import LocalLauncher, SimLauncher

pytestmark = pytest.mark.integration

STAND_IN = """#!{python}
import json, os, signal, subprocess, sys, time

args = sys.argv[1:]
seen = {{k: v for k, v in os.environ.items() if k.startswith(("VLLM_", "EXTRA_"))}}
with open(os.environ["STANDIN_RECORD"], "w") as f:
    json.dump({{"argv": args, "env": seen}}, f)
if os.environ.get("STANDIN_FAIL"):
    print("loading model with key", os.environ.get("VLLM_API_KEY"), file=sys.stderr)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", file=sys.stderr)
    sys.exit(1)
ignored = [getattr(signal, "SIG" + s) for s in os.environ.get("STANDIN_IGNORE", "").split(",") if s]
for sig in ignored:
    signal.signal(sig, signal.SIG_IGN)
time.sleep(float(os.environ.get("STANDIN_DELAY", "0")))

def value(name):
    for i, token in enumerate(args):
        if token == name and i + 1 < len(args):
            return args[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None

sim = ["--model", args[1]]
for name in ("--host", "--port", "--max-num-seqs", "--max-model-len",
             "--max-num-batched-tokens", "--gpu-memory-utilization"):
    if value(name) is not None:
        sim += [name, value(name)]
env = dict(os.environ)
if "VLLM_API_KEY" in env:
    env["HARNESS_SIM_API_KEY"] = env["VLLM_API_KEY"]
child = subprocess.Popen([sys.executable, "-m", "harness.sim", *sim], env=env)
try:
    child.wait()
except KeyboardInterrupt:
    child.wait()
while ignored:  # stuck, as a server that ignores the signal is
    time.sleep(0.1)
"""


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``vllm`` first on PATH; returns the file it records its argv and environment in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vllm"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "record.json"


def local(record: Path, said: list[str], key_env: str | None = None, **env: str) -> LocalLauncher:
    spec = LocalLauncherSpec(
        model="org/llama-3-8b", args=["--dtype", "half"], startup_timeout_s=30,
        stop_timeout_s=0.5, env={"STANDIN_RECORD": str(record), "EXTRA_FLAG": "on", **env},
        api_key_env=key_env,
    )  # fmt: skip
    launcher = make_launcher(spec, apply=False, announce=said.append)
    assert isinstance(launcher, LocalLauncher)
    launcher.nvml = None  # no GPU here; the NVML wait has a unit test of its own
    return launcher


def get(url: str, key: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return json.loads(r.read() or b"null")


def assert_gone(pid: int) -> None:
    """No process of the server's group is left (a zombie only waits to be reaped)."""
    stats = [p.read_text() for p in Path("/proc").glob("[0-9]*/stat") if p.exists()]
    assert not [s for s in stats if s.rsplit(")", 1)[1].split()[2] == str(pid)
                and s.rsplit(")", 1)[1].split()[0] != "Z"]  # fmt: skip


def test_local_passes_flags_and_env_waits_for_health_and_stops_on_sigint(
    stand_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_TEST_KEY", "sk-tune-test-0123456789")
    said: list[str] = []
    launcher = local(stand_in, said, key_env="TUNE_TEST_KEY", STANDIN_DELAY="1.0")
    setting = {"max_num_seqs": 8, "enable_prefix_caching": False, "max_model_len": 2048,
               "VLLM_ATTENTION_BACKEND": "FLASHINFER"}  # fmt: skip
    started = time.monotonic()
    launched = launcher.start(setting, tmp_path / "trial" / "server.log")
    waited = time.monotonic() - started
    try:
        assert waited >= 1.0  # the stand-in's delay: start() waited for it
        base = launched.url.removesuffix("/v1")
        assert get(base + "/health") is None  # answers at once: it was up when start returned
        card = get(launched.url + "/models", "sk-tune-test-0123456789")["data"][0]
        assert (launched.model, card["max_model_len"]) == ("org/llama-3-8b", 2048)
        port = base.rsplit(":", 1)[1]
        record = json.loads(stand_in.read_text())
        assert record["argv"] == [
            "serve", "org/llama-3-8b", "--host", "127.0.0.1", "--port", port,
            "--dtype", "half", "--max-num-seqs", "8", "--no-enable-prefix-caching",
            "--max-model-len", "2048",
        ]  # fmt: skip
        assert record["env"] == {"VLLM_ATTENTION_BACKEND": "FLASHINFER", "EXTRA_FLAG": "on",
                                 "VLLM_API_KEY": "sk-tune-test-0123456789"}  # fmt: skip
        pid = launcher.pid
        assert pid is not None
    finally:
        launcher.stop()
    assert launcher.last_stop == ["SIGINT"]
    assert_gone(pid)
    assert said == []
    launcher.stop()  # idempotent
    assert launcher.last_stop == ["SIGINT"]
    log = (tmp_path / "trial" / "server.log").read_text()
    assert log.startswith("# harness tune: vllm serve org/llama-3-8b")
    assert "sk-tune-test" not in log.splitlines()[0]


@pytest.mark.parametrize(
    ("ignore", "needed"),
    [("INT", ["SIGINT", "SIGTERM"]), ("INT,TERM", ["SIGINT", "SIGTERM", "SIGKILL"])],
)
def test_a_server_that_ignores_signals_is_stopped_harder(
    stand_in: Path, tmp_path: Path, ignore: str, needed: list[str]
) -> None:
    said: list[str] = []
    launcher = local(stand_in, said, STANDIN_IGNORE=ignore)
    launcher.start({}, tmp_path / "server.log")
    pid = launcher.pid
    assert pid is not None
    launcher.stop()
    assert launcher.last_stop == needed
    assert_gone(pid)
    assert said == [
        f"vllm (org/llama-3-8b) (pid {pid}) did not stop within 0.5 s of {sent}: sending {then}"
        for sent, then in itertools.pairwise(needed)
    ]


def test_a_server_that_exits_at_once_fails_the_launch_with_its_last_lines(
    stand_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNE_TEST_KEY", "sk-tune-test-0123456789")
    env = {"STANDIN_RECORD": str(stand_in), "STANDIN_FAIL": "1"}
    spec = LocalLauncherSpec(model="org/llama-3-8b", api_key_env="TUNE_TEST_KEY", env=env)
    launcher = make_launcher(spec, apply=False, announce=print)
    started = time.monotonic()
    with pytest.raises(LaunchFailed) as error:
        launcher.start({"gpu_memory_utilization": 0.99}, tmp_path / "server.log")
    assert time.monotonic() - started < 10
    assert str(error.value).startswith("vllm (org/llama-3-8b) exited with code 1 before it "
                                       "answered (log: ")  # fmt: skip
    tail = error.value.log_tail
    assert tail[-1] == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert tail[-2] == "loading model with key ***"
    assert error.value.exit_code == 4
    launcher.stop()


def test_a_server_that_never_answers_times_out_and_is_stopped(
    stand_in: Path, tmp_path: Path
) -> None:
    launcher = local(stand_in, [], STANDIN_DELAY="30")
    launcher.startup_timeout_s = 1.0
    launcher.stop_timeout_s = 10.0  # ample for SIGINT on a busy machine: escalation is above
    with pytest.raises(LaunchFailed, match=r"did not answer /health and /v1/models within 1 s"):
        launcher.start({}, tmp_path / "server.log")
    assert launcher.pid is None
    assert launcher.last_stop == ["SIGINT"]


def test_a_missing_program_fails_the_launch(tmp_path: Path) -> None:
    spec = LocalLauncherSpec(model="m", command=[str(tmp_path / "no-such-vllm"), "serve"])
    with pytest.raises(LaunchFailed, match=r"cannot start .*no-such-vllm: No such file"):
        make_launcher(spec, apply=False, announce=print).start({}, tmp_path / "server.log")


# -- sim --------------------------------------------------------------------------------------


def test_the_simulator_runs_the_setting_and_notes_what_it_does_not_model(tmp_path: Path) -> None:
    spec = SimLauncherSpec(sim={"model": "sim-tiny", "api_key": "sk-sim-12345678"})
    launcher = make_launcher(spec, apply=False, announce=print)
    assert isinstance(launcher, SimLauncher)
    setting = {"max_num_seqs": 8, "max_model_len": 2048, "enable_prefix_caching": True}
    launched = launcher.start(setting, tmp_path / "server.log")
    try:
        assert launched.model == "sim-tiny"
        assert launched.notes == ("not modelled by the simulator: enable_prefix_caching",)
        assert get(launched.url + "/models", "sk-sim-12345678")["data"][0]["max_model_len"] == 2048
        pid = launcher.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[cmdline.index(b"--max-num-seqs") :][:2] == [b"--max-num-seqs", b"8"]
        assert b"sk-sim-12345678" not in b" ".join(cmdline)
    finally:
        launcher.stop()
    assert launcher.last_stop == ["SIGINT"]
    described = launcher.describe(setting)
    assert described["vllm_serve"] == ("vllm serve sim-tiny --max-num-seqs 8 --max-model-len 2048 "
                                       "--enable-prefix-caching")  # fmt: skip
    assert "api_key" not in described["sim"]["settings"]


def test_a_setting_the_simulator_refuses_fails_the_launch_with_its_reason(tmp_path: Path) -> None:
    launcher = make_launcher(SimLauncherSpec(), apply=False, announce=print)
    with pytest.raises(LaunchFailed, match="exited with code 2") as error:
        launcher.start({"gpu_memory_utilization": 0.1}, tmp_path / "server.log")
    assert any("model weights leave no GPU memory for the KV cache" in line
               for line in error.value.log_tail)  # fmt: skip
    with pytest.raises(LaunchFailed, match="refused") as error:
        launcher.start({"enable_chunked_prefill": False, "max_num_batched_tokens": 1024},
                       tmp_path / "server.log")  # fmt: skip
    assert "smaller than max_model_len (4096)" in error.value.log_tail[0]
    assert launcher.describe({"enable_chunked_prefill": False, "max_num_batched_tokens": 1024})[
        "sim"]["refused"].startswith("max_num_batched_tokens (1024)")  # fmt: skip


# -- kserve -----------------------------------------------------------------------------------


@pytest.fixture
def k8s() -> Iterator[KubeEmulator]:
    with KubeEmulator() as emulator:
        emulator.seed(ISVC, NS, NAME, engine_isvc())
        yield emulator


def kserve(
    k8s: KubeEmulator, tmp_path: Path, apply: bool, said: list[str], timeout_s: float = 5.0
) -> KServeLauncher:
    kubeconfig = str(k8s.write_kubeconfig(tmp_path / "kubeconfig"))
    spec = KServeLauncherSpec(name=NAME, namespace=NS, ready_timeout_s=timeout_s,
                              kubeconfig=kubeconfig)  # fmt: skip
    launcher = make_launcher(spec, apply=apply, announce=said.append)
    assert isinstance(launcher, KServeLauncher)
    launcher.poll_s = 0.05
    return launcher


SETTING = {
    "max_num_seqs": 64,
    "enable_prefix_caching": True,
    "VLLM_ATTENTION_BACKEND": "FLASHINFER",
}


def test_a_kserve_dry_run_writes_nothing(k8s: KubeEmulator, tmp_path: Path) -> None:
    said: list[str] = []
    launcher = kserve(k8s, tmp_path, apply=False, said=said)
    launched = launcher.start(SETTING, tmp_path / "server.log")
    assert (launched.url, launched.measurable) == ("", False)
    assert launched.notes == ("dry run: nothing applied (with --apply the InferenceService is "
                              "patched)",)  # fmt: skip
    assert k8s.writes() == []
    assert k8s.object(ISVC, NS, NAME) == engine_isvc()
    patch = launcher.describe(SETTING)["isvc_patch"]
    assert said == [f"dry run, not sent: patch for InferenceService models/llm: "
                    f"{json.dumps(patch, separators=(',', ':'))}"]  # fmt: skip
    launcher.restore()
    assert k8s.writes() == []


def test_kserve_applies_each_setting_alone_waits_for_it_and_restores(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    k8s.on_patch(RevisingController())
    said: list[str] = []
    launcher = kserve(k8s, tmp_path, apply=True, said=said)
    launched = launcher.start(SETTING, tmp_path / "one.log")
    assert (launched.url, launched.model) == ("http://llm.models.example.com/openai/v1", "llm")
    model = k8s.object(ISVC, NS, NAME)["spec"]["predictor"]["model"]
    assert model["args"] == ["--model_name=llm", "--max-model-len=4096", "--max-num-seqs=64",
                             "--enable-prefix-caching"]  # fmt: skip
    assert model["env"] == [*ENV, {"name": "VLLM_ATTENTION_BACKEND", "value": "FLASHINFER"}]
    assert model["storageUri"] == "s3://models/v1"  # the rest of the predictor untouched
    assert k8s.object(ISVC, NS, NAME)["status"]["components"]["predictor"][
        "latestReadyRevision"] == "llm-predictor-2"  # fmt: skip
    launcher.stop()

    launcher.start({"max_num_seqs": 128}, tmp_path / "two.log")  # not the last one's flags
    model = k8s.object(ISVC, NS, NAME)["spec"]["predictor"]["model"]
    assert model["args"] == ["--model_name=llm", "--max-model-len=4096", "--max-num-seqs=128"]
    assert model["env"] == ENV
    again = launcher.start({"max_num_seqs": 128}, tmp_path / "three.log")
    assert again.notes == ("the InferenceService already runs this setting: nothing patched",)
    assert len(k8s.writes()) == 2

    launcher.restore()
    model = k8s.object(ISVC, NS, NAME)["spec"]["predictor"]["model"]
    assert (model["args"], model["env"]) == (ARGS, ENV)
    assert said[-1] == "restored the args and env InferenceService models/llm had before the study"
    launcher.restore()  # nothing more to put back
    assert len(k8s.writes()) == 3
    assert "merge patch for InferenceService models/llm" in (tmp_path / "one.log").read_text()


def test_a_setting_that_never_becomes_ready_fails_with_what_kserve_said(
    k8s: KubeEmulator, tmp_path: Path
) -> None:
    k8s.on_patch(RevisingController(ready=False))
    launcher = kserve(k8s, tmp_path, apply=True, said=[], timeout_s=0.3)
    with pytest.raises(LaunchFailed) as error:
        launcher.start({"max_num_seqs": 1024}, tmp_path / "server.log")
    assert str(error.value) == (
        "InferenceService models/llm: the setting is not in effect after 0.3 s (revision "
        "llm-predictor-1 from before the patch is still the latest ready one; "
        "LatestDeploymentReady is Unknown)"
    )
    assert error.value.log_tail == [
        "Ready: True", "PredictorReady: True", "LatestDeploymentReady: Unknown",
        "latestCreatedRevision: llm-predictor-2, latestReadyRevision: llm-predictor-1",
    ]  # fmt: skip
    launcher.restore()
    assert k8s.object(ISVC, NS, NAME)["spec"]["predictor"]["model"]["args"] == ARGS
