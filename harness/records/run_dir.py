"""Run folders: results/<run-id>/ with a versioned manifest that describes the run."""

from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__
from harness.errors import ResultsError

if TYPE_CHECKING:
    import pyarrow as pa

MANIFEST_SCHEMA = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True, slots=True)
class Timeline:
    """Monotonic marks of the run (seconds) with the wall-clock time of the start."""

    wall_start: float
    t_start: float
    measure_start: float
    measure_end: float
    t_end: float
    wall_end: float


@dataclass(slots=True)
class Manifest:
    """What a later reader needs to trust, re-judge or reproduce the run."""

    run_id: str
    scenario_file: str
    scenario: dict[str, Any]
    policy_file: str
    policy: dict[str, Any]
    target: dict[str, Any]
    status: str = "running"  # running -> complete | interrupted (a signal) | aborted (an error)
    timeline: Timeline | None = None
    records: int = 0
    load: dict[str, Any] = field(default_factory=dict)  # generators, requests sent, cuts
    notes: list[str] = field(default_factory=list)
    collect: dict[str, Any] = field(default_factory=dict)  # collectors: servers, GPUs found
    tool: dict[str, Any] = field(default_factory=lambda: tool_info())
    host: dict[str, Any] = field(default_factory=lambda: host_info())
    schema: int = MANIFEST_SCHEMA

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "run_id": self.run_id,
            "status": self.status,
            "tool": self.tool,
            "host": self.host,
            "scenario_file": self.scenario_file,
            "scenario": self.scenario,
            "policy_file": self.policy_file,
            "policy": self.policy,
            "target": self.target,
            "timeline": None if self.timeline is None else _timeline_dict(self.timeline),
            "records": self.records,
            "load": self.load,
            "notes": self.notes,
            "collect": self.collect,
        }

    def write(self, run_dir: Path) -> None:
        tmp = run_dir / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(self.to_json_dict(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(run_dir / MANIFEST_NAME)


def _timeline_dict(t: Timeline) -> dict[str, float]:
    return {
        "wall_start": t.wall_start,
        "t_start": t.t_start,
        "measure_start": t.measure_start,
        "measure_end": t.measure_end,
        "t_end": t.t_end,
        "wall_end": t.wall_end,
    }


def read_manifest(run_dir: Path) -> Manifest:
    """Load a manifest, refusing versions this tool does not know."""
    path = run_dir / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: not found: is {run_dir} a run folder?") from None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable: {exc}") from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if schema != MANIFEST_SCHEMA:
        raise ResultsError(
            f"{path}: manifest schema {schema!r} is not supported by this version "
            f"(expected {MANIFEST_SCHEMA}); use the harness version that wrote it"
        )
    try:
        tl = data.get("timeline")
        return Manifest(
            run_id=data["run_id"],
            scenario_file=data["scenario_file"],
            scenario=data["scenario"],
            policy_file=data["policy_file"],
            policy=data["policy"],
            target=data["target"],
            status=data["status"],
            timeline=Timeline(**{k: float(v) for k, v in tl.items()}) if tl else None,
            records=int(data.get("records", 0)),
            load=dict(data.get("load", {})),
            notes=list(data.get("notes", [])),
            collect=dict(data.get("collect", {})),
            tool=data["tool"],
            host=data["host"],
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ResultsError(f"{path}: damaged manifest ({type(exc).__name__}: {exc})") from None


def new_run_dir(out: Path, scenario_name: str) -> tuple[str, Path]:
    """Create results/<run-id>/: UTC time, scenario name and a short random suffix."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_id = f"{stamp}-{scenario_name}-{secrets.token_hex(2)}"
    run_dir = out / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as exc:
        raise ResultsError(
            f"cannot create the run folder {run_dir}: {exc.strerror or exc}"
        ) from None
    return run_id, run_dir


def git_sha() -> str | None:
    """The commit of the harness source tree, when it runs from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def tool_info() -> dict[str, Any]:
    return {
        "name": "llm-slo-harness",
        "version": __version__,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "locust": _version("locust"),
    }


def host_info() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def measured_window(manifest: Manifest, table: pa.Table) -> tuple[float, float]:
    """The measured window (monotonic seconds): the timeline's, or, for a run killed before
    it wrote one, what its records span."""
    if manifest.timeline is None:
        return _window_from_records(table)
    return manifest.timeline.measure_start, manifest.timeline.measure_end


def _window_from_records(table: pa.Table) -> tuple[float, float]:
    """The measured window of a run that never wrote its timeline: first send to last answer."""
    import pyarrow.compute as pc  # here, not above: the load writes run folders without pyarrow

    measured = table.filter(pc.equal(table["phase"], "measure"))
    if measured.num_rows == 0:
        return 0.0, 0.0  # nothing measured: every objective will be INCONCLUSIVE
    start = pc.min(measured["t_sent"]).as_py()
    end = pc.max(measured["t_done"]).as_py()
    return float(start), float(end)
