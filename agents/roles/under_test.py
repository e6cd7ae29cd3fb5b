"""What the failing tests call: the functions a planner should look at, read from the tests' own code.

Measured on an unseen goal ("a test in test_units.py fails since the last commit; find the bug and fix it"):
shown only the failing test's id, the 1.5B planner planned the three functions the README's table named and
never ``km_to_miles()``, the one the failing test calls. The test's body names it; so does its import line.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from ..tools.pyedit import PARSE_ERRORS

MAX_SHOWN = 8


def locate_test(test_id: str, files: set[str]) -> tuple[str, str] | None:
    """(test file, test function name) of a pytest (``path::Class::test[param]``) or unittest
    (``module.Class.test``) id, when the file is in ``files``."""
    if "::" in test_id:
        path, _, rest = test_id.partition("::")
        return (path, rest.split("::")[-1].split("[", 1)[0]) if path in files else None
    parts = test_id.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if path in files:
            return path, parts[-1]
    return None


def _module_path(module: str, files: set[str]) -> str | None:
    base = module.replace(".", "/")
    for path in (f"{base}.py", f"{base}/__init__.py", f"src/{base}.py", f"src/{base}/__init__.py"):
        if path in files:
            return path
    return None


def _called(tree: ast.AST, name: str) -> list[tuple[str | None, str]]:
    """(object name or None, function name) of each call inside the test functions named ``name``."""
    calls: list[tuple[str | None, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            for call in ast.walk(node):
                if not isinstance(call, ast.Call):
                    continue
                if isinstance(call.func, ast.Name):
                    calls.append((None, call.func.id))
                elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
                    calls.append((call.func.value.id, call.func.attr))
    return calls


def functions_under_test(
    failing: list[str], files: list[str], read: Callable[[str], str | None]
) -> list[str]:
    """``"km_to_miles() in units.py"`` for each function a failing test calls that the test module imports
    from a module of the repository (first seen first, at most :data:`MAX_SHOWN`)."""
    known = set(files)
    found: dict[str, None] = {}
    for test_id in failing:
        where = locate_test(test_id, known)
        text = read(where[0]) if where else None
        if where is None or text is None:
            continue
        try:
            tree = ast.parse(text)
        except PARSE_ERRORS:
            continue
        names: dict[str, str] = {}  # a name the test module binds -> the repository file it comes from
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                path = _module_path(node.module, known)
                for alias in node.names if path else []:
                    names[alias.asname or alias.name] = f"{alias.name}() in {path}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if path := _module_path(alias.name, known):
                        names[alias.asname or alias.name] = path
        for owner, called in _called(tree, where[1]):
            if owner is None and called in names and names[called].endswith(".py") and "()" in names[called]:
                found.setdefault(names[called], None)
            elif owner in names and "()" not in names[owner]:
                found.setdefault(f"{called}() in {names[owner]}", None)
        if len(found) >= MAX_SHOWN:
            break
    return list(found)[:MAX_SHOWN]
