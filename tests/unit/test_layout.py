"""The package's layout as a contract (docs/architecture.md): every module imports only from its
own stage or the stages below it, only the CLI imports lazily (and `harness run` its analysis,
after the load), public names say one thing each, and nothing points at files outside the
repository."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "harness"

#: Stages from the bottom up; a module may import from its own stage and those before it.
#: ``base`` is the package itself and its errors; the simulator is a program of its own that
#: imports nothing of the harness; records are the contract the load writes and every later
#: stage reads, so they sit below the load.
STAGES = (
    "base",
    "sim",
    "spec",
    "records",
    "workload",
    "load",
    "collectors",
    "judge",
    "canary",
    "gate",
    "capacity",
    "tune",
    "report",
    "flows",
    "cli",
)
_TOP_LEVEL = {"harness": "base", "harness.errors": "base", "harness.children": "base",
              "harness.cli": "cli",
              "harness.__main__": "cli"}  # fmt: skip


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    lazy: bool  # inside a function


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    if module in _TOP_LEVEL:
        return _TOP_LEVEL[module]
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in STAGES:
        raise AssertionError(f"{module} is in no stage: add it to a stage's package")
    return parts[1]


def _modules() -> dict[str, ast.Module]:
    return {
        module_name(p): ast.parse(p.read_text(encoding="utf-8"), str(p))
        for p in sorted(PACKAGE.rglob("*.py"))
    }


MODULES = _modules()


def harness_imports(module: str, tree: ast.Module) -> list[Import]:
    """Every import of a harness module, with whether it sits inside a function."""
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{module}:{child.lineno}: relative import"
                base = child.module or ""
                if base == "harness" or base.startswith("harness."):
                    for alias in child.names:
                        sub = f"{base}.{alias.name}"
                        target = sub if sub in MODULES else base
                        found.append(Import(module, target, child.lineno, inner))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "harness" or alias.name.startswith("harness."):
                        found.append(Import(module, alias.name, child.lineno, inner))
            visit(child, inner)

    visit(tree, False)
    return found


ALL_IMPORTS = [imp for name, tree in MODULES.items() for imp in harness_imports(name, tree)]


def test_every_module_belongs_to_a_stage() -> None:
    for name in MODULES:
        stage_of(name)


def test_no_module_imports_from_a_stage_above_its_own() -> None:
    upward = [
        f"{i.importer}:{i.line} ({stage_of(i.importer)}) imports {i.imported} "
        f"({stage_of(i.imported)})"
        for i in ALL_IMPORTS
        if STAGES.index(stage_of(i.imported)) > STAGES.index(stage_of(i.importer))
    ]
    assert not upward, "imports that point up the data flow:\n" + "\n".join(upward)


def test_the_simulator_is_a_program_of_its_own() -> None:
    outside = [
        f"{i.importer}:{i.line} imports {i.imported}"
        for i in ALL_IMPORTS
        if stage_of(i.importer) == "sim" and stage_of(i.imported) != "sim"
    ]
    assert not outside


#: The one exception to "only the CLI imports lazily": `harness run` imports the analysis stack
#: (the judge, the reports, and scipy, pandas, pyarrow and plotly under them) only after the load,
#: so it starts its load in under a CPU-second; the early judge only when load.early_stop is set.
AFTER_THE_LOAD = {
    ("harness.flows.run", "harness.flows.evaluate"),
    ("harness.flows.run", "harness.judge.classify"),
    ("harness.flows.run", "harness.judge.early"),
    ("harness.flows.run", "harness.report.files"),
    ("harness.flows.run", "harness.report.html"),
    ("harness.flows.run", "harness.report.table"),
}


def test_only_the_cli_imports_lazily_and_one_flow_per_command() -> None:
    lazy = [i for i in ALL_IMPORTS if i.lazy]
    elsewhere = [f"{i.importer}:{i.line} imports {i.imported}" for i in lazy
                 if i.importer != "harness.cli"
                 and (i.importer, i.imported) not in AFTER_THE_LOAD]  # fmt: skip
    assert not elsewhere, "function-level imports outside harness.cli:\n" + "\n".join(elsewhere)
    late = {(i.importer, i.imported) for i in lazy if i.importer != "harness.cli"}
    assert late == AFTER_THE_LOAD, f"allowed but no longer lazy: {AFTER_THE_LOAD - late}"
    cli_lazy = [i.imported for i in lazy if i.importer == "harness.cli"]
    assert cli_lazy, "the CLI should import each command's flow inside the command"
    assert all(m.startswith("harness.flows.") or m == "harness.sim.command" for m in cli_lazy)
    assert len(cli_lazy) == len(set(cli_lazy)), "one import per command"
    top = {i.imported for i in ALL_IMPORTS if i.importer == "harness.cli" and not i.lazy}
    assert top <= {"harness", "harness.errors"}, top


#: Third-party packages that only the analysis after the load needs.
ANALYSIS_STACK = {"pandas", "pyarrow", "scipy", "plotly", "prometheus_api_client", "kubernetes",
                  "pynvml"}  # fmt: skip


def test_the_run_starts_its_load_without_the_analysis_stack() -> None:
    """What `harness run` imports before its load (the CLI, the run flow) holds none of the
    analysis stack, which costs more CPU-seconds than the whole start-up should."""
    code = "import sys, harness.cli, harness.flows.run; print(*sorted(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    loaded = {name.split(".")[0] for name in out.split()}
    assert not loaded & ANALYSIS_STACK, sorted(loaded & ANALYSIS_STACK)


def _public_definitions() -> dict[str, list[str]]:
    """Public classes, functions and UPPER_CASE constants of every module, by name."""
    where: dict[str, list[str]] = defaultdict(list)
    for module, tree in MODULES.items():
        for node in tree.body:
            names: list[str] = []
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id] if node.target.id.isupper() else []
            where.update({n: [*where[n], module] for n in names if not n.startswith("_")})
    return where


def test_public_names_say_one_thing_each() -> None:
    clashes = {name: mods for name, mods in _public_definitions().items() if len(mods) > 1}
    assert not clashes, f"public names defined more than once: {clashes}"


def test_modules_stay_small() -> None:
    """A module past 600 lines is doing more than one thing: split it by what it does."""
    big = {p.name: n for p in PACKAGE.rglob("*.py")
           if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600}  # fmt: skip
    assert not big


#: Files that users of the project never see; the project's own docs replace them.
_OUTSIDE = re.compile(
    "|".join(
        ["DESIGN" + r"\.md", "STYLE" + r"\.md", "real-" + "components", "metrics-" + "reference",
         "runbook" + r"\.md", "the " + "issue"]
    )
)  # fmt: skip


@pytest.mark.parametrize("folder", ["harness", "tests", "docs", "scenarios", "slo", "deploy"])
def test_nothing_points_outside_the_repository(folder: str) -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / folder).rglob("*"))
        if path.is_file() and path.suffix in {".py", ".md", ".yaml", ".yml", ".sh"}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert not hits, "\n".join(hits)
