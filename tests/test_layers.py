"""The house rules, read from the code itself: which room may import which, and who may import MPI, HDF5
and TensorFlow (see shared/DESIGN.md). The module graph comes from ``ast`` (every import, also those
inside functions), not from a grep."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hpc_hpo"

#: Each room and the rooms it may import (besides itself). Lower rooms never import higher ones.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "logs": set(),
    "_version": set(),
    "_toml": set(),
    "search": {"errors", "_toml"},
    "batch": {"errors"},
    "config": {"errors", "_toml", "search"},
    "results": {"errors", "_version", "_toml", "config", "search"},
    "trials": {"errors", "results", "config", "search"},
    "outputs": {"errors", "_version", "_toml", "results", "config", "search"},
    "run": {"errors", "logs", "_version", "config", "search", "results", "trials", "batch"},
    "tf": {"errors", "trials"},
    "examples": {"tf"},
    "api": {"errors", "logs", "config", "search", "results", "run", "trials"},
    "cli": {"errors", "logs", "_version", "_toml", "config", "search", "results", "trials", "outputs", "run", "batch",
            "api"},
    "__init__": {"_version", "errors", "config", "results", "outputs", "trials", "api"},
    "__main__": {"cli"},
}

#: Third-party packages and the only rooms that may import them.
ONLY_IN = {
    "mpi4py": {"run/comm.py"},
    "h5py": {"results"},
    "tensorflow": {"tf", "examples", "trials/frameworks.py"},  # frameworks: in the trial process only
    "keras": {"tf", "examples", "trials/frameworks.py"},
    "matplotlib": {"outputs"},
}


def room(path: Path) -> str:
    """The top-level module or subpackage a file of the package belongs to."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> list[tuple[str, int]]:
    """(absolute dotted name, line) of every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["hpc_hpo", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]  # `from . import x`
    return found


def graph() -> dict[str, list[tuple[str, str, int]]]:
    """room -> [(file, imported hpc_hpo room or third-party package, line)]."""
    edges = defaultdict(list)
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    for path in PACKAGE.rglob("*.py"):
        for name, line in imports(path):
            parts = name.split(".")
            if parts[0] == "hpc_hpo" and len(parts) > 1 and parts[1] in modules:
                edges[room(path)].append((str(path.relative_to(PACKAGE)), parts[1], line))
            elif parts[0] != "hpc_hpo":
                edges[room(path)].append((str(path.relative_to(PACKAGE)), "pkg:" + parts[0], line))
    return edges


def test_every_room_has_a_rule():
    rooms = {room(p) for p in PACKAGE.rglob("*.py")}
    assert rooms <= set(ALLOWED), f"rooms without a rule: {sorted(rooms - set(ALLOWED))}"


def test_no_room_imports_one_above_it():
    broken = [f"{file}:{line} imports {target}" for source, edges in graph().items()
              for file, target, line in edges
              if not target.startswith("pkg:") and target != source and target not in ALLOWED[source]]
    assert not broken, "imports against the layers:\n" + "\n".join(sorted(set(broken)))


@pytest.mark.parametrize("package", sorted(ONLY_IN))
def test_heavy_and_parallel_packages_are_imported_only_where_they_belong(package):
    allowed = ONLY_IN[package]
    broken = [f"{file}:{line}" for source, edges in graph().items() for file, target, line in edges
              if target == f"pkg:{package}" and source not in allowed and file not in allowed]
    assert not broken, f"{package} imported outside {sorted(allowed)}: {broken}"


def test_the_search_room_is_pure():
    """Strategies, the GP and (later) stopping rules are unit-tested with plain numbers: no MPI, no HDF5, no
    TensorFlow, and nothing of the rooms that run or store trials."""
    forbidden = {"pkg:mpi4py", "pkg:h5py", "pkg:tensorflow", "pkg:keras", "pkg:torch", "run", "results", "trials"}
    bad = [(file, target) for file, target, _ in graph()["search"] if target in forbidden]
    assert not bad


def test_the_gp_does_not_know_the_strategies_that_use_it():
    bad = [f"{file}:{line}" for file, _, line in graph()["search"]
           if file.startswith("search/gp/") and any(name.startswith("hpc_hpo.search.strategies")
                                                    for name, at in imports(PACKAGE / file) if at == line)]
    assert not bad, bad


def test_the_graph_is_read_from_every_import_even_inside_functions(tmp_path):
    sample = PACKAGE / "run" / "worker.py"
    names = {name for name, _ in imports(sample)}
    assert "hpc_hpo.search.gp.suggester" in names  # imported inside a method, on demand
