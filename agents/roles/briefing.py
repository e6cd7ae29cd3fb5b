"""What a worker starts with and what it has already seen: the task's files, the tests that exercise them, and
the record that lets a re-read be answered from the conversation instead of costing a step.

Measured with the 1.5B model (the demo, first round): a worker spent its 12 steps reading files that were already
in its prompt and reading past their ends, and never wrote. So the first prompt carries the task's files and
their tests (whole when they fit, otherwise the parts that mention the task's functions), and :class:`Seen`
remembers which whole files the conversation holds, so a read of an unchanged one gets a nudge, not a step.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..tools import changes, confine, imported, pyedit, targeted

if TYPE_CHECKING:
    from ..git.integration import Conflict

PRELOAD_FILES = 3
SOURCE_BUDGET = 9000
"""Characters of the task's own files put in the first prompt (whole files, or excerpts when too large)."""
TEST_BUDGET = 5000
"""Characters of the related tests put in the first prompt."""
WHOLE_UNDER = 1500
"""A file this small is shown whole even when only part of it concerns the task."""
FREE_NUDGES = 4
"""Reads answered from the conversation that cost no step, per worker (a model that keeps asking pays again)."""


@dataclass
class Shown:
    path: str
    text: str
    whole: bool
    file_text: str | None = None
    """The file's own text when ``text`` shows it whole but with its stubs marked (what a re-read returns)."""


@dataclass
class Briefing:
    """The task's context, prepared once in a thread before the first model call."""

    files: list[Shown] = field(default_factory=list)
    tests: list[Shown] = field(default_factory=list)
    test_paths: list[str] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    adds: set[str] = field(default_factory=set)
    """Functions its title adds (:func:`added_names`)."""
    helpers: list[str] = field(default_factory=list)
    """What the task's Python files import from the repository: a signature and a docstring line each."""


def _read(root: str, path: str, limit: int = 400_000) -> str | None:
    try:
        real, _ = confine.resolve(root, path)
        with open(real, "rb") as fh:
            return fh.read(limit).decode("utf-8")
    except (confine.ActionFailed, OSError, UnicodeDecodeError):
        return None


_AS_CODE = re.compile(r"`([^`\n]+)`|\b([A-Za-z_]\w*)\s*\(|\b([A-Za-z_]*[a-z0-9](?:_|[A-Z])\w*)")
"""What instructions write as code: in backticks, called, or with an underscore or a capital inside."""


ADDS_FUNCTION = re.compile(
    r"^\s*(?:add|implement|create|write|define)\s+(?:an?\s+|the\s+)?(?:new\s+)?(?:function\s+)?`?([A-Za-z_]\w*)(?:\(\))?`?"
    r"(?:\(\))?(?:\s+function)?(?:\s+(?:in|to|into)\b|\s*$)",
    re.IGNORECASE,
)
"""A title that adds one function: "Add miles_to_km function to units.py", "Implement `slugify()` in text.py"."""


_NEW_IN_TITLE = re.compile(r"\b([A-Za-z_]\w*)\(|\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b(?![.\w(])")
"""A name in a title that reads as a function: called, or snake_case (not a file's ``name.py``)."""


def added_names(title: str, sources: list[str]) -> set[str]:
    """Functions the title adds, not defined in the task's files yet: the name after its verb ("Add triple to
    units.py") or written as code ("... miles_to_km ..."). A finish is refused while one is a stub, or before a
    test was written when the task names a test file (incomplete.py); the task's tests are chosen by
    :func:`task_names` alone."""
    defined: set[str] = set()
    for text in sources:
        defined |= pyedit.defined_names(text)
    named = {m.group(1) or m.group(2) for m in _NEW_IN_TITLE.finditer(title)}
    if added := ADDS_FUNCTION.match(title):
        named.add(added.group(1))
    return named - defined


def task_names(title: str, instructions: str, sources: list[str]) -> set[str]:
    """The functions the task is about: identifiers that its files define and that its title names, or that its
    instructions write as code (:data:`_AS_CODE`); plain words of their prose only when nothing else names one.
    Seen: "Change only that function." made more-itertools' ``only()`` one of the task's functions, and its
    tests (which passed) the ones every write was checked against."""
    defined: set[str] = set()
    for text in sources:
        defined |= pyedit.defined_names(text)
    words = set(pyedit.IDENT.findall(title))
    for match in _AS_CODE.finditer(instructions):
        words |= set(pyedit.IDENT.findall(next(g for g in match.groups() if g)))
    named = {w for w in words & defined if len(w) > 2}
    if named:
        return named
    return {w for w in set(pyedit.IDENT.findall(instructions)) & defined if len(w) > 2}


def _fit(path: str, text: str, names: set[str], budget: int, *, outline: bool = False) -> Shown | None:
    """The file whole when it is small or nothing narrower can be shown; else the parts about ``names``.

    Measured: prompt processing is most of a call's time on a small CPU-served model (4 first prompts of
    ~2,500 tokens took the first two minutes of an 8-minute run), so a 4 KB file is cut to its task's parts.
    """
    if len(text) <= min(budget, WHOLE_UNDER):
        return Shown(path, text, whole=True)
    part = pyedit.excerpt(text, names, budget, outline=outline) if path.endswith(".py") else None
    if part is not None and len(part) < len(text):
        return Shown(path, part, whole=False)
    return Shown(path, text, whole=True) if len(text) <= budget else None


def prepare(root: str, title: str, instructions: str, files: list[str]) -> Briefing:
    """Blocking: read the task's files, find their tests, and cut both to the prompt's budget."""
    brief = Briefing()
    sources = {p: t for p in files[:PRELOAD_FILES] if (t := _read(root, p)) is not None}
    brief.names = task_names(title, instructions, list(sources.values()))
    brief.adds = added_names(title, list(sources.values()))
    budget = SOURCE_BUDGET
    for path, text in sources.items():
        shown = _fit(path, text, brief.names, budget, outline=True)
        if shown is not None:
            if path.endswith(".py"):
                marked = pyedit.show_stubs_as_specs(shown.text, brief.names)
                shown.text, shown.file_text = marked, (text if marked != shown.text else None)
            brief.files.append(shown)
            budget -= len(shown.text)
        if path.endswith(".py"):
            brief.helpers += [h for h in imported.imported_helpers(path, text, lambda p: _read(root, p))
                              if h not in brief.helpers]  # fmt: skip
    brief.test_paths = targeted.related_tests(root, list(files), brief.names)
    budget = TEST_BUDGET
    for path in brief.test_paths:
        if path in sources:
            continue
        text = _read(root, path)
        shown = _fit(path, text, brief.names, budget) if text is not None else None
        if shown is not None:
            brief.tests.append(shown)
            budget -= len(shown.text)
    return brief


class Seen:
    """Whole files the conversation holds (by message), so a re-read of an unchanged one is answered from it."""

    def __init__(self) -> None:
        self._whole: dict[str, tuple[str, dict[str, str]]] = {}
        self._past_end: set[str] = set()
        self.free_left = FREE_NUDGES

    def remember(self, path: str, text: str, message: dict[str, str]) -> None:
        self._whole[os.path.normpath(path)] = (text, message)

    def forget(self, path: str) -> None:
        self._whole.pop(os.path.normpath(path), None)

    def in_context(self, root: str, path: str, messages: list[dict[str, str]]) -> bool:
        """The whole current text of ``path`` is in a message still in ``messages``."""
        held = self._whole.get(os.path.normpath(path))
        if held is None or not any(m is held[1] for m in messages):
            return False
        return _read(root, path) == held[0]

    def past_end_again(self, path: str) -> bool:
        """Record a read past ``path``'s end; True if it was already said once."""
        key = os.path.normpath(path)
        if key in self._past_end:
            return True
        self._past_end.add(key)
        return False


PAST_END = re.compile(r"has only (\d+) lines")


# What a worker is told when it wastes a step (answered without one where possible).
REPEAT_NUDGE = (
    "\nNOTE: this action is exactly the same as your previous one, so it changed nothing. Do the next thing:"
    " write the file, run the check, or finish."
)


def regex_hint(path: str) -> str:
    """After a ``replace`` whose search looks like a regular expression (write_function only for Python: a
    JavaScript worker told to use it was refused, and tried again)."""
    simpler = " To change a whole function, write_function is simpler." if path.endswith(".py") else ""
    return (
        "\nNOTE: `search` is exact text, not a regular expression: copy the lines as they are, without"
        f" backslashes.{simpler}"
    )


PASSED_HINT = "\nThe tests for your task pass now: finish, unless something in the task is still missing."
SAME_GOOD_EDIT = (
    "error: the same edit again; it is in the file already and broke nothing. Do what is left of your task"
    " (the tests it asks for, if any), or finish."
)


def already_shown_nudge(path: str, where: str) -> str:
    how = (
        "write_function for one Python function, write_file for a whole small file"
        if path.endswith(".py")
        else "replace for one exact piece of it, write_file for the whole file"
    )
    return (
        f"You already have the whole of {path} in this conversation ({where}) and it has not changed, so it is"
        f" not shown again and this cost you no step. Use what you have: make your edit now ({how}), or finish."
    )


def past_end_nudge(path: str) -> str:
    return (
        f"You have already read to the end of {path}; there is nothing past it (this cost you no step)."
        " Make your edit now, or finish."
    )


def done_before_nudge(step: int, observation: str) -> str:
    shown = observation if len(observation) <= 800 else observation[:800] + " [...]"
    return (
        f"You did exactly this at step {step} and nothing has been edited since, so the answer is the same"
        f" (this cost you no step):\n{shown}\nDo something different now: make your edit, or finish."
    )


TEST_FOLDER = re.compile(r"(^|/)(tests?|__tests__|spec)/|(^|/)conftest\.py$")


def is_test_file(path: str) -> bool:
    """A test file in any language the check detects, or anything under a test folder."""
    return bool(TEST_FOLDER.search(path) or targeted.TEST_FILE.match(os.path.basename(path)))


def test_edit_refusal(root: str, path: str, task_files: list[str]) -> str | None:
    """Why an edit of ``path`` is refused: it changes an existing test file the task does not name (None: go on).

    Tests are the specification the landing gate judges by; measured, the 1.5B model "fixed" a failing test by
    editing the test's expected value. A task that names a test file may edit it; new test files may be added.
    """
    norm = os.path.normpath(path).lstrip("./")
    if not is_test_file(norm) or norm in {os.path.normpath(f) for f in task_files}:
        return None
    changes.settle(root, norm)
    if not os.path.isfile(os.path.join(root, norm)):
        return None
    return (
        f"error: {path} is a test file and your task does not name it: tests are the specification, so leave"
        " them as they are and change the code they test"
    )


def read_text(root: str, path: str) -> str | None:
    """Blocking: a file of the worktree as text (None: missing, unreadable or outside it)."""
    return _read(root, path)


def line_count(root: str, path: str) -> int | None:
    text = _read(root, path)
    if text is None:
        return None
    return len(text.split("\n")) - (1 if text.endswith("\n") else 0)


def conflict_message(conflict: Conflict) -> str:
    """What a worker is told when its work conflicts with what landed meanwhile."""
    parts = [
        "CONFLICT: your change conflicts with work other agents landed meanwhile on the shared branch.",
        "The files below now hold both sides with conflict markers (<<<<<<< ======= >>>>>>>).",
        "Rewrite each file so it keeps both intentions and has no markers left, then finish again.",
    ]
    for path in conflict.paths:
        parts.append(f"- {path}")
    for file in conflict.files[:3]:
        shown = file.merged if file.merged is not None else "(deleted on one side)"
        parts.append(f"\n{file.path} now reads:\n{shown[:3000]}")
    return "\n".join(parts)


def fit_context(messages: list[dict[str, str]], budget_chars: float) -> None:
    """Keep a conversation inside the context window: drop the oldest steps, keep the task (the first two)."""
    total = sum(len(m["content"]) for m in messages)
    dropped = 0
    while total > budget_chars and len(messages) > 4:
        total -= len(messages.pop(2)["content"])
        dropped += 1
    note = "[older steps omitted to fit the context window]"
    if dropped and not messages[2]["content"].startswith(note):
        messages.insert(2, {"role": "user", "content": note})
