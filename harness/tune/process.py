"""Launchers that run the server as a process on this machine: ``vllm serve`` (local) and the
built-in simulator (sim), one process group per setting.

Each server gets a session of its own (so a terminal's Ctrl-C reaches the harness, which stops
it in order) and dies with the harness where Linux allows. Stopping walks SIGINT (vLLM's
graceful shutdown), SIGTERM, SIGKILL to the whole group, each given ``stop_timeout_s``, and
returns when no process of the group is left; then, where NVML works, it waits until no GPU
compute process belongs to the server, so the next setting does not start on memory the last
one still holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final

from harness.children import die_with_parent, free_port
from harness.errors import UsageError
from harness.sim.settings import API_KEY_ENV, GIB, SimSettings
from harness.spec.launcher import LocalLauncherSpec, SimLauncherSpec
from harness.tune.contract import Launched, LaunchFailed, log_tail, secret_values
from harness.tune.flags import (
    isvc_patch,
    serve_command,
    sim_cli_args,
    sim_settings,
    vllm_args,
    vllm_env,
)

try:
    import pynvml as _pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
    _pynvml = None

#: How often a starting server is asked whether it answers (vLLM takes minutes; the
#: simulator well under a second).
POLL_S: Final = 0.25
#: How long a stopped server's GPU memory may take to show as released.
GPU_RELEASE_TIMEOUT_S: Final = 120.0
SIM_STOP_TIMEOUT_S: Final = 10.0
_HTTP_TIMEOUT_S = 2.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)
#: Loopback servers are reached directly, whatever HTTP(S)_PROXY says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _NotReady(Exception):
    """The server exited or never answered: the message for LaunchFailed."""


class ProcessLauncher:
    """One server process group at a time; subclasses say what command runs a setting."""

    kind = "process"

    def __init__(
        self,
        *,
        what: str,
        host: str,
        port: int,
        startup_timeout_s: float,
        stop_timeout_s: float,
        announce: Callable[[str], None],
        api_key: str | None = None,
        secrets: Collection[str] = (),
    ) -> None:
        self.what, self.host, self.port = what, host, port
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.announce = announce
        self.api_key = api_key
        self.secrets: list[str | None] = [api_key, *secrets]
        self.poll_s = POLL_S
        self.gpu_release_timeout_s = GPU_RELEASE_TIMEOUT_S
        self.nvml: Any = _pynvml  # tests put a stand-in here
        self.last_stop: list[str] = []  # the signals the last stop needed, e.g. ["SIGINT"]
        self.gpu_not_released: str | None = None  # what held GPU memory after the last stop
        self._proc: subprocess.Popen[bytes] | None = None
        self._pids: set[int] = set()

    def command(
        self, setting: Mapping[str, Any], port: int
    ) -> tuple[list[str], dict[str, str], tuple[str, ...]]:
        """The argv, the environment added to ours, and notes for a setting (ValueError: the
        setting is refused before anything starts)."""
        raise NotImplementedError

    def describe(self, setting: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def restore(self) -> None:
        """Nothing outside this process changes: ``stop`` leaves nothing behind."""

    @property
    def pid(self) -> int | None:
        """The running server's pid (its process group's id too), or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def connect_host(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"[{host}]" if ":" in host else host

    def start(self, setting: Mapping[str, Any], log_path: Path) -> Launched:
        self.stop()
        # A free port is picked here and bound by the server a moment later: another program
        # could take it in between, and the launch then fails (rare; set launcher.port).
        port = self.port or free_port()
        try:
            argv, env, notes = self.command(setting, port)
        except ValueError as exc:
            raise LaunchFailed(f"{self.what}: the setting is refused: {exc}", [str(exc)]) from None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            log.write(f"# harness tune: {shlex.join(argv)}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env},
                    start_new_session=True,  # its own process group, signalled as one
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                said = f"cannot start {argv[0]}: {exc.strerror or exc}"
                raise LaunchFailed(f"{self.what}: {said}", [said]) from None
        try:
            model = self._await_ready(self._proc, port)
        except _NotReady as exc:
            self.stop()
            raise LaunchFailed(
                f"{exc} (log: {log_path})", log_tail(log_path, self.secrets)
            ) from None
        except BaseException:  # interrupted while it starts: leave nothing behind
            self.stop()
            raise
        self._pids = family(self._proc.pid)
        return Launched(f"http://{self.connect_host}:{port}/v1", model, notes)

    def _await_ready(self, proc: subprocess.Popen[bytes], port: int) -> str:
        """Poll until /health answers 200 and /v1/models lists a model; that model."""
        base = f"http://{self.connect_host}:{port}"
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = proc.poll()
            if code is not None:
                raise _NotReady(f"{self.what} exited {exit_text(code)} before it answered")
            model = self._answers(base)
            if model is not None:
                return model
            if time.monotonic() >= deadline:
                raise _NotReady(
                    f"{self.what} did not answer /health and /v1/models within "
                    f"{self.startup_timeout_s:g} s"
                )
            time.sleep(self.poll_s)

    def _answers(self, base: str) -> str | None:
        """The first model /v1/models lists once /health is 200; None while it starts."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            with _OPENER.open(base + "/health", timeout=_HTTP_TIMEOUT_S) as resp:
                if resp.status != 200:
                    return None
            req = urllib.request.Request(base + "/v1/models", headers=headers)
            with _OPENER.open(req, timeout=_HTTP_TIMEOUT_S) as resp:
                listed = json.loads(resp.read())["data"]
            models = [str(m["id"]) for m in listed]
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise _NotReady(
                    f"{self.what} refused the API key: HTTP {exc.code} to GET /v1/models"
                ) from None
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return models[0] if models else None

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        pids = self._pids | family(proc.pid)
        self.last_stop = []
        for sig in _STOP_SIGNALS:
            if not group_alive(proc):
                break
            if self.last_stop:
                self.announce(
                    f"{self.what} (pid {proc.pid}) did not stop within "
                    f"{self.stop_timeout_s:g} s of {self.last_stop[-1]}: sending {sig.name}"
                )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            self.last_stop.append(sig.name)
            wait_gone(proc, self.stop_timeout_s)
        else:
            if group_alive(proc):
                self.announce(f"{self.what} (pid {proc.pid}) is still there after SIGKILL")
        self._proc, self._pids = None, set()  # only now: an interrupted stop is taken up again
        self._await_gpu_release(pids)

    def _await_gpu_release(self, pids: set[int]) -> None:
        self.gpu_not_released = wait_gpu_released(pids, self.gpu_release_timeout_s, self.nvml)
        if self.gpu_not_released:
            self.announce(
                f"GPU memory not released {self.gpu_release_timeout_s:g} s after {self.what} "
                f"stopped: {self.gpu_not_released}"
            )


class SimLauncher(ProcessLauncher):
    """The built-in simulator with each vLLM setting mapped onto its knobs (flags.sim_settings);
    what it does not model comes back as notes. It runs as ``python -m harness.sim``, the
    program ``harness sim`` runs, so a setting it refuses exits 2 with its reason in the log."""

    kind = "sim"

    def __init__(self, spec: SimLauncherSpec, announce: Callable[[str], None]) -> None:
        key = spec.sim.get("api_key")
        super().__init__(what="the built-in simulator", host="127.0.0.1", port=0,
                         startup_timeout_s=spec.startup_timeout_s,
                         stop_timeout_s=SIM_STOP_TIMEOUT_S, announce=announce,
                         api_key=str(key) if key else None)  # fmt: skip
        self.base = dict(spec.sim)

    def command(
        self, setting: Mapping[str, Any], port: int
    ) -> tuple[list[str], dict[str, str], tuple[str, ...]]:
        settings, notes = sim_settings(self.base, setting)
        settings.update(host="127.0.0.1", port=port)
        argv = [sys.executable, "-m", "harness.sim", *sim_cli_args(settings)]
        env = {API_KEY_ENV: self.api_key} if self.api_key else {}  # never on the command line
        return argv, env, tuple(notes)

    def describe(self, setting: Mapping[str, Any]) -> dict[str, Any]:
        model = str(self.base.get("model") or SimSettings.model_fields["model"].default)
        out: dict[str, Any] = {"vllm_serve": serve_command(model, setting),
                               "isvc_patch": isvc_patch(None, setting)}  # fmt: skip
        try:
            settings, notes = sim_settings(self.base, setting)
        except ValueError as exc:
            out["sim"] = {"refused": str(exc)}
            return out
        settings.pop("api_key", None)
        out["sim"] = {"settings": settings, "notes": notes}
        return out


class LocalLauncher(ProcessLauncher):
    """``COMMAND MODEL --host H --port P ARGS... SETTING-FLAGS...`` with the setting's
    ``VLLM_*`` variables and ``env`` added; the API key, when one is named, travels as
    ``VLLM_API_KEY`` (vLLM's own variable for ``--api-key``), never in argv."""

    kind = "local"

    def __init__(self, spec: LocalLauncherSpec, announce: Callable[[str], None]) -> None:
        key = None
        if spec.api_key_env is not None:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise UsageError(f"launcher.api_key_env names {spec.api_key_env}, which is not set")
        super().__init__(what=f"{spec.command[0]} ({spec.model})", host=spec.host,
                         port=spec.port, startup_timeout_s=spec.startup_timeout_s,
                         stop_timeout_s=spec.stop_timeout_s, announce=announce, api_key=key,
                         secrets=secret_values(spec.env))  # fmt: skip
        self.spec = spec

    def command(
        self, setting: Mapping[str, Any], port: int
    ) -> tuple[list[str], dict[str, str], tuple[str, ...]]:
        spec = self.spec
        argv = [*spec.command, spec.model, "--host", spec.host, "--port", str(port), *spec.args,
                *vllm_args(setting)]  # fmt: skip
        env = {**spec.env, **vllm_env(setting)}
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        return argv, env, ()

    def describe(self, setting: Mapping[str, Any]) -> dict[str, Any]:
        return {"vllm_serve": serve_command(self.spec.model, setting, self.spec.args),
                "isvc_patch": isvc_patch(None, setting)}  # fmt: skip


# -- processes --------------------------------------------------------------------------------


def exit_text(code: int) -> str:
    """``with code 1``, or ``on SIGKILL`` for a process a signal ended."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"on {signal.Signals(-code).name}"
    return f"with code {code}"


def _process_table() -> dict[int, tuple[int, int, str]] | None:
    """pid -> (parent pid, process group, state) from /proc; None where there is none."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    table: dict[int, tuple[int, int, str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and ")"
        table[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def family(pid: int) -> set[int]:
    """A server's pid, its descendants and its process group's members: every process that
    may hold its GPU memory (vLLM's engine and workers are its children)."""
    table = _process_table()
    if table is None:
        return {pid}
    found = {pid} | {p for p, (_, group, _) in table.items() if group == pid}
    grew = True
    while grew:
        more = {p for p, (parent, _, _) in table.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found


def group_alive(proc: subprocess.Popen[bytes]) -> bool:
    """Whether any process of the group ``proc`` leads is still running (zombies, which
    only wait to be reaped, do not count)."""
    proc.poll()  # reap the leader
    table = _process_table()
    if table is not None:
        return any(group == proc.pid and state != "Z" for _, group, state in table.values())
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_gone(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while group_alive(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- GPU memory -------------------------------------------------------------------------------


def gpu_holders(nvml: Any, pids: Collection[int]) -> list[tuple[int, int, int]]:
    """(GPU index, pid, bytes) of every compute process NVML lists among ``pids``."""
    error: Any = getattr(nvml, "NVMLError", Exception)
    found: list[tuple[int, int, int]] = []
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except error:
        return found
    for index in range(count):
        try:
            running = nvml.nvmlDeviceGetComputeRunningProcesses(
                nvml.nvmlDeviceGetHandleByIndex(index)
            )
        except error:
            continue
        for p in running:
            if int(p.pid) in pids:
                found.append((index, int(p.pid), int(getattr(p, "usedGpuMemory", 0) or 0)))
    return found


def wait_gpu_released(
    pids: Collection[int], timeout_s: float, nvml: Any, poll_s: float = 0.5
) -> str | None:
    """Wait until no GPU compute process is one of ``pids``: None once so (or where NVML
    cannot start), else what still holds memory at the timeout. In a container with its own
    pid namespace NVML reports host pids, which never match: the wait then ends at once."""
    if nvml is None or not pids:
        return None
    try:
        nvml.nvmlInit()
    except Exception:  # no driver, no library: nothing to wait for
        return None
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            holding = gpu_holders(nvml, pids)
            if not holding:
                return None
            if time.monotonic() >= deadline:
                return "; ".join(
                    f"pid {pid} holds {used / GIB:.1f} GiB on GPU {gpu}"
                    for gpu, pid, used in holding
                )
            time.sleep(poll_s)
    finally:
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
