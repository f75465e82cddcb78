"""Developer and CI sessions. They run in the project's own environment (.venv), which
`pip install -e '.[test,dev]'` sets up once, so a session costs no reinstall."""

from __future__ import annotations

import sys

import nox

nox.options.sessions = ["lint", "types", "tests"]
nox.options.default_venv_backend = "none"

PY = sys.executable


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.run(PY, "-m", "ruff", "check", ".")
    session.run(PY, "-m", "ruff", "format", "--check", ".")


@nox.session
def types(session: nox.Session) -> None:
    """mypy --strict over the package, the tests and this file."""
    session.run(PY, "-m", "mypy")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, property, integration and end-to-end tests (benchmarks are skipped)."""
    session.run(PY, "-m", "pytest", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """Only the end-to-end tests: the CLI against real servers."""
    session.run(PY, "-m", "pytest", "-m", "e2e", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, kept out of the default run: hot paths beside references, dispatch, the
    client's fidelity and throughput beside aiohttp + uvloop, and the whole `harness run`
    beside that client and vLLM's benchmark client (with a per-stage profile)."""
    session.run(PY, "-m", "pytest", "tests/benchmarks", "--benchmark-only", *session.posargs)
    session.run(PY, "tests/benchmarks/dispatch_rate.py")
    session.run(PY, "tests/benchmarks/dispatch_rate.py", "--arrivals", "5000", "200")
    session.run(PY, "tests/benchmarks/fidelity/fidelity.py")
    session.run(PY, "tests/benchmarks/fidelity/whole_run.py")
    session.run(PY, "tests/benchmarks/fidelity/whole_run.py", "--profile", "--streams", "128")
    session.run(PY, "tests/benchmarks/judge_scale.py")
    session.run(PY, "tests/benchmarks/early_looks.py")
    session.run(PY, "tests/benchmarks/capacity_cost.py")
