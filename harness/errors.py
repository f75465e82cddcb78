"""Exit codes and the errors that map onto them (docs/architecture.md, "Exit codes")."""

from __future__ import annotations

import enum
from pathlib import Path


class ExitCode(enum.IntEnum):
    """The process exit status CI scripts branch on."""

    PASS = 0
    FAIL = 1
    USAGE = 2
    INCONCLUSIVE = 3
    INVALID = 4
    INTERRUPTED = 130  # Ctrl-C or SIGTERM, the shell's code for SIGINT
    INTERNAL = 70  # a bug in the harness (sysexits' EX_SOFTWARE): never a verdict


class HarnessError(Exception):
    """An error the CLI reports in one line, without a traceback."""

    exit_code: ExitCode = ExitCode.USAGE


class ConfigError(HarnessError):
    """A scenario or policy file that cannot be used: names file, key path and expectation."""

    exit_code = ExitCode.USAGE

    def __init__(self, file: str, problems: list[tuple[str, str]]) -> None:
        self.file = file
        self.problems = problems
        lines = [f"{file}: {path or '<top level>'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class TargetUnreachable(HarnessError):
    """The target could not be reached before load started: the run is invalid."""

    exit_code = ExitCode.INVALID


class UsageError(HarnessError):
    """A command-line value that cannot be used."""

    exit_code = ExitCode.USAGE


class RunInterrupted(HarnessError):
    """The run was stopped (Ctrl-C, SIGTERM); what it measured is in the run folder."""

    exit_code = ExitCode.USAGE  # replaced by 130 in the CLI, the shell's code for SIGINT


class ResultsError(HarnessError):
    """A run folder that is missing, damaged or of an unknown schema version."""

    exit_code = ExitCode.USAGE


_run_dir: list[Path] = []


def note_run_dir(run_dir: Path) -> None:
    """Remember the run folder this process works in, so that an internal error's traceback is
    written there, beside the records, for the bug report."""
    _run_dir[:] = [run_dir]


def noted_run_dir() -> Path | None:
    return _run_dir[0] if _run_dir else None
