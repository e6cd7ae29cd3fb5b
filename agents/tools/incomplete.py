"""Python edits that leave a function unfinished: code that can never run, and a function with no body yet.

Why, seen with the 1.5B model on an unseen goal ("Add miles_to_km() ... and a unittest for it"):
- a ``replace`` put ``return c * 9 / 5 + 32`` straight under ``def celsius_to_fahrenheit(c):``, above its
  docstring and old body. Every test still passed, so it landed: the docstring and its doctests were dead code.
  An edit that leaves statements after a ``return`` (or ``raise``, ``continue``, ``break``) where there were
  none is refused before it is written (:func:`refuse_dead_code`).
- the worker added ``def miles_to_km(miles): "Convert miles to kilometers"`` (a docstring, no code), its
  targeted tests passed (none tested it yet), it finished, and the stub landed as done. A finish is refused
  while a function the task names is still a stub in the files it wrote (:func:`stubs_named`).
"""

from __future__ import annotations

import ast

from . import confine
from .pyedit import PARSE_ERRORS, _docstring, _functions, _is_stub
from .targeted import TEST_FILE

_ENDS = (ast.Return, ast.Raise, ast.Continue, ast.Break)
_ABSTRACT = {"abstractmethod", "overload", "abstractproperty"}


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except PARSE_ERRORS:
        return None


def _dead(tree: ast.AST) -> dict[str, ast.stmt]:
    """The first statement that can never run in each function (by qualified name) that has one."""
    found: dict[str, ast.stmt] = {}
    for name, node in _functions(tree):
        for inner in ast.walk(node):
            for field in ("body", "orelse", "finalbody"):
                block = getattr(inner, field, None)
                if not isinstance(block, list):
                    continue
                for before, after in zip(block, block[1:], strict=False):
                    if isinstance(before, _ENDS) and isinstance(after, ast.stmt):
                        found.setdefault(name, after)
                        break
    return found


def refuse_dead_code(old: str | None, new: str, shown: str) -> None:
    """Refuse an edit of a Python file that leaves code after a ``return`` in a function that had none there."""
    new_tree = _parse(new)
    if new_tree is None:
        return  # the parse check after the edit says what is wrong
    dead = _dead(new_tree)
    if not dead:
        return
    old_tree = _parse(old) if old else None
    before = _dead(old_tree) if old_tree is not None else {}
    added = [(name, stmt) for name, stmt in dead.items() if name not in before]
    if not added:
        return
    name, stmt = added[0]
    line = new.split("\n")[stmt.lineno - 1].strip()[:80]
    raise confine.ActionFailed(
        f"error: not written: in {name}() of {shown}, line {stmt.lineno} (`{line}`) would come after a return"
        " and never run (a docstring or the old body left below new code). Send the function's complete new"
        " definition with write_function, its docstring first, instead of adding lines above the old ones"
    )


def refuse_dead_code_in(root: str, path: object, new: str) -> None:
    """:func:`refuse_dead_code` for a whole-file write of ``path`` (what it holds now is the old text)."""
    tree = _parse(new) if str(path).endswith(".py") else None
    if tree is not None and _dead(tree):  # the old text is read only when there is something to compare
        old, shown = confine.text_if_there(root, path)
        refuse_dead_code(old, new, shown)


def stubs_named(text: str, names: set[str]) -> list[str]:
    """The functions in ``names`` that ``text`` defines with no code yet (a docstring, ``pass``, ``...``,
    ``return None``; ``raise NotImplementedError`` in a top-level function). An abstract method (decorated,
    or raising NotImplementedError in a class) is what it should be, and is not listed."""
    tree = _parse(text)
    if tree is None or not names:
        return []
    found = []
    for qualified, node in _functions(tree):
        if node.name not in names:
            continue
        decorators = {getattr(d, "attr", getattr(d, "id", "")) for d in node.decorator_list}
        if decorators & _ABSTRACT:
            continue
        doc = _docstring(node)
        code = [stmt for stmt in node.body if stmt is not doc]
        if code and not (len(code) == 1 and _is_stub(code[0])):
            continue
        if code and isinstance(code[0], ast.Raise) and "." in qualified:
            continue  # a method left to subclasses
        found.append(qualified)
    return found


def unwritten(root: str, paths: list[str], names: set[str]) -> list[str]:
    """Blocking: ``name() in path`` for each function of ``names`` still a stub in one of ``paths`` (Python)."""
    found: list[str] = []
    for path in dict.fromkeys(paths):
        text, shown = confine.text_if_there(root, path) if path.endswith(".py") else (None, path)
        if text is not None:
            found += [f"{name}() in {shown}" for name in stubs_named(text, names)]
    return found


def finish_refused(left: list[str]) -> str:
    """What a worker is told when it finishes with ``left`` still stubs."""
    which = ", ".join(left[:4])
    return (
        f"error: not finished: {which} {'has' if len(left) == 1 else 'have'} no code yet, only a docstring or a"
        " placeholder. Write the statements that compute the result (write_function with the complete"
        " definition), then finish."
    )


def has_code(text: str, name: str) -> bool:
    """Whether ``text`` defines a function ``name`` (or ``Class.name``) whose body is more than a stub."""
    tree = _parse(text)
    if tree is None:
        return False
    return any(node.name == name for _, node in _functions(tree)) and not stubs_named(text, {name})


def tests_missing(task_files: list[str], edited: list[str], adds: set[str]) -> str | None:
    """What a worker is told when its task adds a function, names a test file, and no test file was edited
    (None: nothing missing). Seen: "Add miles_to_km() to units.py (with its tests)" landed the function
    without a test, and its code was the inverse of what was asked (nothing could tell)."""
    tests = [p for p in task_files if TEST_FILE.match(p.rsplit("/", 1)[-1])]
    if not adds or not tests or not edited or any(TEST_FILE.match(p.rsplit("/", 1)[-1]) for p in edited):
        return None
    return (
        f"error: not finished: your task includes its tests, and no test file was changed. Add a test of"
        f" {', '.join(sorted(adds)[:3])} to {tests[0]} that checks a result worked out by hand, then finish."
    )
