"""What planners and the judge are told about progress: what has landed, what the check still fails.

Measured with the 1.5B model: cycle 2's planner re-planned the three tasks of cycle 1, two of which had landed,
and the judge's notes repeated one sentence until their length cap. So planners are shown the landed work and
the failing tests, a planned task that repeats landed work is dropped in code (a small model does not reliably
obey "do not"), and repeated sentences are removed from the judge's notes.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..tools.check import failing_ids
from .context import Landed

if TYPE_CHECKING:
    from ..tools.targeted import CheckRun

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "in",
        "of",
        "to",
        "for",
        "and",
        "or",
        "with",
        "from",
        "by",
        "on",
        "its",
        "it",
        "be",
        "is",
        "are",
        "make",
        "implement",
        "fix",
        "add",
        "write",
        "function",
        "functions",
        "file",
        "files",
        "module",
        "test",
        "tests",
        "so",
        "that",
        "all",
        "pass",
        "passes",
    ]
)
MAX_FAILING = 30


def _keywords(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) > 3 and w.lower() not in _STOP}


def _norm(title: str) -> str:
    return " ".join(_WORD.findall(title.lower()))


def _path_words(files: list[str]) -> set[str]:
    return {w.lower() for f in files for w in _WORD.findall(f)}


def repeats_landed(title: str, files: list[str], landed: list[Landed]) -> Landed | None:
    """The landed task ``title``/``files`` would do again, if any: the same title, or the same files and a
    shared specific word (a function name, not a file's name) in the title."""
    norm, fileset = _norm(title), set(files)
    words = _keywords(title) - _path_words(files)
    for done in landed:
        if _norm(done.title) == norm:
            return done
        if fileset and fileset == set(done.files) and words & _keywords(done.title):
            return done
    return None


def failing_tests(output: str, limit: int | None = MAX_FAILING) -> list[str]:
    """Failing test ids in a check's output, in any runner format the gate reads (empty when it names none)."""
    return failing_ids(output)[:limit]


def failing_before(output: str, before_output: str | None, limit: int = 6) -> str:
    """A line naming the tests in ``output`` that already failed in ``before_output`` (the same tests before the
    worker's first edit), or "" when none did.

    Why: on a branch with failing tests, the check after each edit lists them all, and a small model then spends
    its steps on tests its task is not about (measured on an unseen goal: a worker adding is_palindrome() rewrote
    the stub slugify() twice). The landing gate only refuses new failures; this says which ones are old."""
    if before_output is None:
        return ""
    old = set(failing_ids(before_output))
    carried = [t for t in failing_ids(output) if t in old]
    if not carried:
        return ""
    more = f" and {len(carried) - limit} more" if len(carried) > limit else ""
    return (
        f"\nALREADY FAILING BEFORE YOUR FIRST EDIT: {', '.join(carried[:limit])}{more}. Unless your task is "
        "about them, they are not yours to fix: the landing gate only refuses new failures."
    )


def only_old_failures(output: str, before_output: str | None, names: set[str]) -> bool:
    """The check fails only on tests that already failed before the worker's first edit, and none of those is
    about the task (names none of ``names``, the functions it is about): the edit broke nothing, on a branch with failures that are not
    the task's. Such an edit is not a failed try (it is not undone and drawn again).

    Why: measured on an unseen goal, a correct ``is_palindrome()`` added to a module whose stub ``slugify()``
    failed three tests was undone as "not better than before" three times, and the task ran out of steps."""
    if before_output is None:
        return False
    old, now = set(failing_ids(before_output)), set(failing_ids(output))
    if not now or not now <= old:
        return False
    keys = [k for n in names if (k := n.lower().replace("_", ""))]
    return bool(keys) and not any(k in t.lower().replace("_", "") for t in old for k in keys)


def no_new_failure(command: str, output: str, limit: int = 6) -> str:
    """What a worker is shown instead of the check's output when its edit broke nothing and every failure is old
    and not its task's (:func:`only_old_failures`): measured, the 1.5B model shown the old failures' tracebacks
    went on to rewrite the functions they were about."""
    failing = failing_ids(output)
    more = f" and {len(failing) - limit} more" if len(failing) > limit else ""
    return (
        f"CHECK `{command}`: NO NEW FAILURE. Your edit broke nothing: the only failing tests "
        f"({', '.join(failing[:limit])}{more}) were failing before your first edit and are not your task's. "
        "Do what is left of your task (the tests it asks for, if any), then finish."
    )


def check_summary(exit_code: int | None, output: str, tail: int = 1500) -> str:
    """One short block for a prompt: passed, or the failing tests (or the output's tail when none are named)."""
    if exit_code == 0:
        return "PASSED (every test passes)"
    failing = failing_tests(output, limit=None)
    status = "did not finish" if exit_code is None else f"FAILED (exit {exit_code})"
    if failing:
        return f"{status}; {len(failing)} failing: " + ", ".join(grouped(failing))
    return f"{status}:\n{output.strip()[-tail:]}"


def grouped(failing: list[str], limit: int = MAX_FAILING) -> list[str]:
    """Failing test ids grouped by test function, parameter cases counted, in first-seen order.

    Measured: 200 failures of one parametrized test (the 30 shown all its cases) hid the five other failing
    tests, and the 1.5B planner planned work for that one test file only.
    """
    counts: dict[str, int] = {}
    for test in failing:
        key = test.split("[", 1)[0]
        counts[key] = counts.get(key, 0) + 1
    shown = [f"{k} (x{n})" if n > 1 else k for k, n in counts.items()]
    if len(shown) > limit:
        shown = shown[:limit] + [f"and {len(shown) - limit} more"]
    return shown


def dedupe_sentences(text: str) -> str:
    """``text`` without sentences (or lines) it already said: a small model loops on one sentence."""
    out: list[str] = []
    seen: set[str] = set()
    for piece in re.split(r"(?<=[.!?])\s+|\n+", text.strip()):
        key = " ".join(piece.lower().split())
        if not key or key in seen:
            continue
        seen.add(key)
        out.append(piece.strip())
    return " ".join(out)


def made_progress(first: CheckRun | None, last: CheckRun | None) -> bool | None:
    """Whether the task's own tests (``first``: before the worker's first edit; ``last``: after its last) got
    better; None when the task has none to tell by. Unfinished work without progress does not land: seen on an
    unseen goal, a worker planned to "fix" a working function ran out of steps and landed a new, unused function
    beside it."""
    if first is None or first.exit_code is None:
        return None
    return not first.passed and last is not None and last.better_than(first)
