"""What every launcher of `harness tune` promises: start a server with a setting and say where
it answers, or fail with the server's last words; stop it so the next setting starts clean.

Kept apart from ``launch`` (which picks the launcher) so the launchers can import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.errors import ExitCode, HarnessError
from harness.records.redact import safe_text

#: Lines of the server's log a failed launch carries.
TAIL_LINES = 20
#: The most of a log read for its tail: vLLM's logs run long, the end is what matters.
_TAIL_BYTES = 64 * 1024
_LINE_LIMIT = 500


class LaunchFailed(HarnessError):
    """A server did not come up with a setting (it exited, or never answered in time): that
    setting cannot be measured; the study goes on with the next one."""

    exit_code = ExitCode.INVALID

    def __init__(self, message: str, log_tail: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.log_tail = list(log_tail)  # the server's last lines, keys removed


@dataclass(frozen=True, slots=True)
class Launched:
    """A server running one setting: its OpenAI base URL and the model to ask for.

    ``url`` is empty when nothing was started (a KServe dry run: the patch was only printed);
    the caller measures nothing then. ``notes`` say what the setting could not change (the
    simulator's unmodelled settings) or how it was applied.
    """

    url: str
    model: str
    notes: tuple[str, ...] = ()

    @property
    def measurable(self) -> bool:
        return bool(self.url)


class Launcher(Protocol):
    """Starts a server per setting; one at a time."""

    kind: str  # "sim" | "local" | "kserve"

    def start(self, setting: Mapping[str, Any], log_path: Path) -> Launched:
        """Start with the setting, writing the server's output to ``log_path``; return once it
        answers. LaunchFailed (after cleaning up) when it cannot."""
        ...

    def stop(self) -> None:
        """Idempotent; when it returns the server is gone (and its GPU memory, where NVML
        shows it)."""
        ...

    def describe(self, setting: Mapping[str, Any]) -> dict[str, Any]:
        """How to run the setting by hand, for reports: ``vllm_serve`` (a shell line) and
        ``isvc_patch`` (a KServe merge patch)."""
        ...

    def restore(self) -> None:
        """Undo what the launches changed outside this process (a patched InferenceService);
        also called on interrupt."""
        ...


_SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_MIN_SECRET = 8  # shorter values are too common in text to mask (CUDA_VISIBLE_DEVICES=0)


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of variables whose names say they are secrets, to keep out of log tails."""
    return [v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET]


def log_tail(path: Path, secrets: Iterable[str | None] = (), lines: int = TAIL_LINES) -> list[str]:
    """The last non-empty lines of a log, each without the secrets and clipped."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    found = text.splitlines()
    if size > _TAIL_BYTES:
        found = found[1:]  # read from the middle of a line
    keys = list(secrets)
    kept = [line.rstrip() for line in found if line.strip()]
    return [safe_text(line, keys, _LINE_LIMIT) for line in kept[-lines:]]
