"""Named targets: a goal that names the functions to write and the files they live in is already a plan.

Measured (bench/effectiveness.py, the embedded 1.5B model): given a goal listing six stubbed functions, each with
its file and its tests, the root planner's one call (1,200 prompt tokens, 90 s on a busy 2-core machine) planned
ONE task, for a test file whose failures merely called those functions; the demo's planner did the same with its
three stubs. When the operator has already split the work — each target a function the goal names together with
the file that defines it — those targets become the tasks directly, one per function, with no model call. The
model planner still plans everything else: goals that name no such targets, follow-ups, and later rounds once
every named target has landed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..tools import pyedit
from .briefing import is_test_file
from .replies import PlannedTask

_FUNCTION = re.compile(r"`?\b([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\(\)`?")
_PATH = re.compile(r"`?([A-Za-z0-9_./-]+\.[A-Za-z0-9]+)`?")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n+")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_BULLET_START = re.compile(r"\n\s*(?:[-*+]|\d+[.)])\s+")
_ASIDE = re.compile(r"\([^)]*\)|\b(in|and|the|tests?|of|for)\b|[`,;.:]")
CONTEXT_CHARS = 400
MIN_TARGETS = 1
"""Even one: a goal that names one function and its file ("Fix ordinal() in number.py: ordinal(11) gives
'11st'") got, from the 1.5B planner on an unseen repository, three tasks on that one function in one run, and in
another a task for ``__init__.py``, one for the tests and a sub-planner "to split the goal", none on the file the
goal named. What else such a goal asks for is planned once its target has landed."""


@dataclass(frozen=True)
class Target:
    function: str
    path: str
    tests: str
    said: str  # the goal's own words about this target

    @property
    def title(self) -> str:
        return f"{self.function}() in {self.path}"[:100]


def _mentions(text: str, files: set[str]) -> list[tuple[int, str, str]]:
    """(position, kind, value) of each function and existing-file mention in ``text``, in order."""
    found: list[tuple[int, str, str]] = []
    for m in _FUNCTION.finditer(text):
        found.append((m.start(), "function", m.group(1)))
    for m in _PATH.finditer(text):
        path = m.group(1).removeprefix("./")
        if path in files:
            found.append((m.start(), "path", path))
    return sorted(found)


def find_targets(goal: str, files: list[str], read) -> list[Target]:
    """The (function, file) pairs ``goal`` names, each function defined in its file; ``read(path)`` gives a
    file's text (None when unreadable). Empty when the goal names fewer than :data:`MIN_TARGETS`."""
    fileset = set(files)
    mentions = _mentions(goal, fileset)
    targets: list[Target] = []
    seen: set[tuple[str, str]] = set()
    for i, (pos, kind, value) in enumerate(mentions):
        if kind != "function":
            continue
        source = tests = ""
        end = len(goal)
        for later_pos, later_kind, later in mentions[i + 1 :]:
            if later_kind == "function":
                end = later_pos
                break
            if is_test_file(later):
                tests = tests or later
            elif not source:
                source = later
        if not source:  # "a() and b() in m.py": a shares the file named after the functions that follow it
            source, tests = _shared_file(goal, pos, mentions[i + 1 :], tests)
        name = value.rsplit(".", 1)[-1]
        if not source or (value, source) in seen:
            continue
        text = read(source)
        if text is None or not _defines(source, text, name):
            continue
        seen.add((value, source))
        said = re.split(r"(?<=[.!?])\s", " ".join(_BULLET_START.split(goal[pos:end])[0].split()))[0]
        said = re.sub(r"(?:[\s,;.]+(?:and|or))?[\s,;.]*$", "", said)
        targets.append(Target(value, source, tests, said))
    return targets if len(targets) >= MIN_TARGETS else []


def _shared_file(goal: str, pos: int, later: list[tuple[int, str, str]], tests: str) -> tuple[str, str]:
    """The source file (and test file, when none yet) named after a run of functions that starts at ``pos``, in
    the same sentence ("frequencies() and sliding_window() in toolz/itertoolz.py": seen on toolz, the first
    function was not planned at all)."""
    for later_pos, kind, value in later:
        if _SENTENCE.search(goal[pos:later_pos]):
            break
        if kind == "path" and is_test_file(value):
            tests = tests or value
        elif kind == "path":
            return value, tests
    return "", tests


def _says_more(target: Target) -> bool:
    """The goal's words about a target say more than its name, file and tests (e.g. what it must return)."""
    rest = target.said.replace(target.function + "()", " ").replace(target.path, " ")
    return len(_ASIDE.sub(" ", rest).split()) >= 3


def _defines(path: str, text: str, name: str) -> bool:
    if path.endswith(".py"):
        return name in pyedit.defined_names(text)
    return re.search(rf"\b{re.escape(name)}\b", text) is not None


def context_of(goal: str) -> str:
    """The goal's sentences and lines that name no function: what applies to every target (the check to pass,
    what not to touch)."""
    kept: list[str] = []
    for line in goal.splitlines():
        if _BULLET.match(line) and _FUNCTION.search(line):
            continue
        for piece in _SENTENCE.split(line):
            if piece.strip() and not _FUNCTION.search(piece):
                kept.append(piece.strip())
    return " ".join(kept)


def planned_tasks(goal: str, targets: list[Target]) -> list[PlannedTask]:
    """One task per target, in the goal's order."""
    context = context_of(goal)[:CONTEXT_CHARS]
    tasks = []
    for t in targets:
        where = f" (tests in {t.tests})" if t.tests else ""
        instructions = f"Write `{t.function}()` in {t.path} as its docstring and its tests specify{where}."
        if _says_more(t):
            instructions += f" The goal says: {t.said}."
        instructions += " Change only that function."
        if context:
            instructions += f" From the goal: {context}"
        tasks.append(PlannedTask(title=t.title, instructions=instructions[:800], files=[t.path], check=""))
    return tasks


def still_failing(found: list[Target], failing: list[str]) -> set[Target]:
    """The targets whose tests are among ``failing`` (test ids from the check's output on the shared tip).

    A test id names its target when it contains the function's name (``test_ordinal[-1--1st]``), or when it is
    in the target's own test file that no other target shares (``test_text.SlugifyTest.test_simple``).
    Measured on the demo: a worker stopped by its step limit landed a ``slugify`` that passed one more test
    than the stub (so the gate let it in) and the task ended "done"; the model planner then re-planned
    ``median``, which had landed whole, and ``slugify`` was never tried again.
    """
    shared: dict[str, int] = {}
    for t in found:
        shared[t.tests] = shared.get(t.tests, 0) + 1
    ids = [(i.lower().replace("_", ""), i) for i in failing]
    hit: set[Target] = set()
    for t in found:
        name = t.function.rsplit(".", 1)[-1].lower().replace("_", "")
        stem = PurePosixPath(t.tests).stem if t.tests else ""
        own_file = bool(stem) and shared[t.tests] == 1
        if any(name in flat or (own_file and stem in raw) for flat, raw in ids):
            hit.add(t)
    return hit
