"""What a module imports from its own project, one line of meaning each: for a worker's first prompt.

Why: a small model writing one function uses the helpers it knows about. Measured (bench/effectiveness.py,
Qwen2.5-Coder-1.5B): ``hex_to_rgb`` in webcolors must expand "#fff" to "#ffffff", which the imported
``normalize_hex`` does; the worker saw only the import line, and its drafts parsed three-digit values by hand and
failed the same test for 8 minutes. So each name a task's module imports from a file of the same repository is
shown with its signature and the first line of its docstring. Only the worktree's own files are read, through
the confined reader; nothing is imported or run.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable

from .pyedit import PARSE_ERRORS

MAX_NAMES = 12
MAX_CHARS = 1500
MAX_IMPORTS = 40
"""Import statements looked at, at most (each may read a few files; a hostile module may have thousands)."""
SUMMARY_CHARS = 160


def imported_helpers(path: str, text: str, read: Callable[[str], str | None]) -> list[str]:
    """``def name(args) -> ret:  # first docstring line`` for each function or class ``path`` imports from a
    module of the same repository (``read(relative path)`` gives a file's text or None), within the bounds."""
    try:
        tree = ast.parse(text)
    except PARSE_ERRORS:
        return []
    lines: list[str] = []
    size = 0
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.names][:MAX_IMPORTS]
    for node in imports:
        source = _module_file(path, node, read)
        if source is None:
            continue
        _, module_text = source
        wanted = {alias.name for alias in node.names if alias.name != "*"}
        for line in _summaries(module_text, wanted):
            if len(lines) >= MAX_NAMES or size + len(line) > MAX_CHARS:
                return lines
            lines.append(line)
            size += len(line) + 1
    return lines


def _module_file(
    path: str, node: ast.ImportFrom, read: Callable[[str], str | None]
) -> tuple[str, str] | None:
    """The repository file an import names, and its text: relative to ``path``'s package, or for an absolute
    import, below any folder that holds ``path`` (a ``src/`` layout included)."""
    parts = (node.module or "").split(".") if node.module else []
    if node.level:
        base = os.path.dirname(path)
        for _ in range(node.level - 1):
            base = os.path.dirname(base)
        bases = [base]
    else:
        bases, folder = [], os.path.dirname(path)
        while True:
            bases.append(folder)
            if not folder:
                break
            folder = os.path.dirname(folder)
    for base in bases:
        stem = os.path.join(base, *parts) if parts else base
        for candidate in (f"{stem}.py", os.path.join(stem, "__init__.py")):
            candidate = os.path.normpath(candidate)
            if candidate == os.path.normpath(path) or candidate.startswith(".."):
                continue
            found = read(candidate)
            if found is not None:
                return candidate, found
    return None


def _summaries(text: str, names: set[str]) -> list[str]:
    try:
        tree = ast.parse(text)
    except PARSE_ERRORS:
        return []
    out = []
    for node in tree.body:
        if (
            not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            or node.name not in names
        ):
            continue
        doc = (ast.get_docstring(node, clean=True) or "").strip().split("\n", 1)[0].strip()[:SUMMARY_CHARS]
        note = "; ".join(part for part in (_fields(node), doc) if part)
        out.append(f"{_signature(node)}  # {note}" if note else _signature(node))
    return out


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> str:
    if isinstance(node, ast.ClassDef):
        bases = ", ".join(ast.unparse(b) for b in node.bases)
        return f"class {node.name}({bases}):" if bases else f"class {node.name}:"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    prefix = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    return f"{prefix} {node.name}({ast.unparse(node.args)}){returns}:"


def _fields(node: ast.AST) -> str:
    """``Name(field: type, ...)`` for a record class (NamedTuple, dataclass, TypedDict): how to build one."""
    if not isinstance(node, ast.ClassDef):
        return ""
    fields = [
        f"{ast.unparse(f.target)}: {ast.unparse(f.annotation)}"
        for f in node.body
        if isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)
    ]
    return f"{node.name}({', '.join(fields)})"[:SUMMARY_CHARS] if fields else ""
