"""Edits that patch the tests' cases instead of fixing the rule: refused, undone, and the worker told why.

Why: a small model shown ``assert 'childtoys' == 'child_toys'`` learns the cheapest way to make that line pass.
Seen in an effectiveness run (Qwen2.5-Coder-1.5B): ``tableize()`` "restored" as
``pluralize(word).lower().replace(' ', '_').replace('_recipeingredients', '_recipe_ingredients')
.replace('childtoys', 'child_toys')`` — every test passed, and the function is wrong for any word the tests do
not name. Code like that is worse than the stub it replaces: the stub says it is unfinished.

The sign that tells it from honest code: the edit writes into the code, as a string literal, a value that a
failing test showed the code *returning* — an actual value, not an expected one. Expected values are literals of
the test files; actual values are the other quoted strings of the failure lines (pytest's ``E`` lines,
unittest's ``AssertionError``). Honest code has no reason to contain its own wrong output. Values shorter than
:data:`MIN_CHARS` are ignored (a wrong ``'st'`` from ``ordinal(11)`` is also a right answer elsewhere), and so
are values the file held before the edit or that a test file holds.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable

from .briefing import read_text
from .restart import restore

MIN_CHARS = 5
"""Shorter values are too common to mean anything (suffixes, separators)."""
MAX_VALUES = 200
"""Wrong values remembered per worker, at most."""
_QUOTED = re.compile(r"""(?<![\w'"])(?:'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*")""")
_FAILURE_LINE = re.compile(r"^(?:E\s+.*|.*AssertionError.*)$", re.M)


def string_literals(text: str) -> set[str]:
    """Every string constant of Python source (docstrings included); empty when it does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def quoted_in_failures(output: str) -> set[str]:
    """The quoted strings on a test run's failure lines (whole ones: pytest cuts long values with ``...``)."""
    found: set[str] = set()
    for line in _FAILURE_LINE.findall(output):
        for quoted in _QUOTED.findall(line):
            try:
                value = ast.literal_eval(quoted)
            except (SyntaxError, ValueError):
                continue
            if isinstance(value, str) and "..." not in value:
                found.add(value)
    return found


class WrongValues:
    """What one worker's failing tests showed its code returning (see the module)."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def learn(self, output: str, test_texts: Iterable[str]) -> None:
        """Remember the actual values of ``output``'s failures; ``test_texts``: the task's test files, only
        iterated when there are values to tell apart."""
        seen = {v for v in quoted_in_failures(output) if len(v.strip()) >= MIN_CHARS}
        if not seen or len(self.values) >= MAX_VALUES:
            return
        expected: set[str] = set()
        for text in test_texts:
            expected |= string_literals(text)
        self.values |= set(sorted(seen - expected)[: MAX_VALUES - len(self.values)])

    def patched(self, before: str | None, after: str | None) -> list[str]:
        """The wrong values ``after`` writes in as literals that ``before`` did not have (sorted; empty: none,
        or the new text does not parse: the parse check says so)."""
        if not self.values or after is None:
            return []
        new = string_literals(after) - (string_literals(before) if before else set())
        return sorted(new & self.values)


def refusal(path: str, values: list[str]) -> str:
    """What the worker is told (its edit is undone)."""
    shown = ", ".join(repr(v) for v in values[:3])
    return (
        f"\n\nERROR: your edit was undone: it writes {shown} into {path}, which is what the tests showed your"
        " code returning. Turning a wrong output into the expected one passes only the inputs the tests name."
        " Fix the rule that produced the wrong value instead."
    )


def undo_patch(root: str, path: str, last: tuple[str, bytes | None] | None, wrong: WrongValues) -> str | None:
    """Blocking: when the edit just made to ``path`` patches wrong values in, put the file back as ``last``
    held it and say why (None: the edit stands)."""
    if last is None or last[0] != os.path.normpath(path):
        return None
    before = last[1].decode("utf-8", "replace") if last[1] is not None else None
    values = wrong.patched(before, read_text(root, path))
    if not values:
        return None
    restore(root, path, last[1])
    return refusal(path, values)


def learn_from(run_output: str, wrong: WrongValues, root: str, test_paths: Iterable[str]) -> None:
    """Blocking: learn a failing run's wrong values (the test files are read lazily: only when it has any)."""
    wrong.learn(run_output, (t for p in test_paths if (t := read_text(root, p)) is not None))
