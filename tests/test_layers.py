"""The package keeps its layers: the import-linter contracts in pyproject.toml hold, and no import cycle exists.

Both read the package as it is built (the folders mapped to ``formicary.*`` by ``[tool.setuptools.package-dir]``),
counting every import: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "formicary"


def _package_dirs() -> dict[str, Path]:
    """``formicary.x`` → its folder, from pyproject.toml (what the wheel is built from)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {name: ROOT / folder for name, folder in data["package-dir"].items()}
    dirs = {}
    for name in data["packages"]:
        if name in mapped:
            dirs[name] = mapped[name]
        else:  # a sub-package of a mapped one: its folder inside the parent's
            parent, _, leaf = name.rpartition(".")
            dirs[name] = dirs[parent] / leaf
    return dirs


def _modules() -> dict[str, Path]:
    """Every module of the built package: name → source file (``__init__`` as the package's name)."""
    out = {}
    for package, folder in _package_dirs().items():
        for path in sorted(folder.glob("*.py")):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``formicary`` modules ``name`` imports anywhere in its source."""
    is_package = path.stem == "__init__"
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in modules:  # ``from a.b import c`` where c is a name: a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                add(full if full in modules else module)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve_like_python(tmp_path):
    modules = {"formicary.x": tmp_path / "x.py", "formicary.x.y": tmp_path / "y.py", "formicary.z": tmp_path}
    source = tmp_path / "y.py"
    source.write_text("def f():\n    from .. import z\n    from . import missing\n")
    assert _imports("formicary.x.y", source, modules) == {"formicary.z", "formicary.x"}


def test_no_import_cycle_in_the_package():
    modules = _modules()
    assert "formicary.agents.session.engine" in modules and "formicary.screens.session" in modules
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


@pytest.fixture(scope="module")
def built_layout(tmp_path_factory) -> Path:
    """The package's files laid out as the wheel installs them (the source folders are mapped, not nested)."""
    site = tmp_path_factory.mktemp("layout")
    for package, folder in _package_dirs().items():
        dest = site.joinpath(*package.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for path in folder.glob("*.py"):
            shutil.copy2(path, dest / path.name)
    return site


def test_import_linter_contracts_hold(built_layout, tmp_path):
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(built_layout), "PYTHONNOUSERSITE": "1"}
    result = subprocess.run(
        [str(lint), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout
