"""The check a worker's edit is tested with: the tests of the module it touched, run by itself after each edit.

Why: with a 1.5B model every step is ~30 s, and a worker that must spend a step on ``run`` to learn whether its
edit works often never does (it reads instead). So after each edit the check runs without a model step and its
result is part of the edit's observation: edit → test → edit. The check is narrowed to the tests that exercise
the touched files (and, for pytest, to the test names that mention the task's functions), so the answer comes in
seconds and does not report other workers' unfinished tasks as this worker's failures. When nothing narrower
can be said, the project's whole check runs.

Everything that runs goes through :func:`.sandbox.run_command`, like a worker's own ``run``.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from . import changes
from .confine import NOT_EXPANDED
from .sandbox import run_command

MAX_TEST_FILES = 4
OUTPUT_TAIL = 1500
"""Characters of a check's output in an observation (its tail: pytest ends with the failure and summary)."""
NO_TESTS_RAN = 5  # pytest's and (3.12+) unittest's exit status when the selection is empty
TEST_FILE = re.compile(
    r"^(test_.*|.*_test)\.py$"  # pytest, unittest
    r"|^.*[._](test|spec)\.[cm]?[jt]sx?$"  # JavaScript / TypeScript: lib.test.js, lib.spec.ts
    r"|^.*_test\.go$"  # go test
    r"|^(test_.*|.*_(test|spec))\.rb$"  # minitest, rspec
)
"""A test file's name, in the languages whose runners the check detects (a test folder alone is not enough)."""
_TEST_AFFIX = re.compile(r"^test_|([._](test|spec))$|_test$")
_SOURCE = re.compile(r"\.(py|[cm]?[jt]sx?|go|rb)$")


def module_name(path: str) -> str:
    """``pkg/mod.py`` → ``mod``; ``pkg/__init__.py`` → ``pkg``; ``src/lib.js`` → ``lib``."""
    p = PurePosixPath(path)
    if p.stem == "__init__":
        return p.parent.name
    return p.stem if p.suffix == ".py" else p.stem.split(".")[0]  # lib.d.ts → lib


def module_tested(test_path: str) -> str:
    """The module a test file is named after: ``test_mod.py`` → ``mod``, ``lib.test.js`` → ``lib``."""
    name = PurePosixPath(test_path).name
    return _TEST_AFFIX.sub("", _SOURCE.sub("", name))


def test_files(root: str) -> list[str]:
    """Every test file (:data:`TEST_FILE`) under ``root`` (relative paths), skipping caches, virtualenvs and
    dependencies (node_modules)."""
    changes.settle_names(root)
    found: list[str] = []
    stack = [("", os.path.join(root, ""))]
    while stack and len(found) <= 2000:
        rel, folder = stack.pop()
        names, subfolders = _listing(folder)
        found.extend(rel + name for name in names)
        stack.extend((f"{rel}{d}/", f"{folder}{d}/") for d in reversed(subfolders))
    return found


LISTINGS_MAX = 200_000
_listings: dict[str, tuple[int, list[str], list[str]]] = {}


def _listing(folder: str) -> tuple[list[str], list[str]]:
    """A folder's test files and the folders to descend into, both sorted, as ``os.walk`` sees them (links to
    folders are not descended). Kept while the folder's mtime stays: writing a file in place does not change
    it, adding, removing or renaming one does. Why: every worker's first prompt looks for its tests, and a
    walk of a 2,000-file worktree per task was ~9 % of the engine's CPU at 1,024 workers."""
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return [], []
    kept = _listings.get(folder)
    if kept is not None and kept[0] == mtime:
        return kept[1], kept[2]
    names, subfolders = [], []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if not is_dir:
                    if TEST_FILE.match(entry.name):
                        names.append(entry.name)
                elif (
                    entry.name not in NOT_EXPANDED
                    and not entry.name.startswith(".")
                    and not entry.is_symlink()
                ):
                    subfolders.append(entry.name)
    except OSError:
        return [], []
    names.sort()
    subfolders.sort()
    # Not kept while the mtime is recent: a change within the file system's clock tick would not move it.
    if time.time_ns() - mtime > 2_000_000_000:
        if len(_listings) >= LISTINGS_MAX:
            _listings.clear()
        _listings[folder] = (mtime, names, subfolders)
    return names, subfolders


def related_tests(root: str, files: list[str], names: set[str]) -> list[str]:
    """The test files that exercise ``files``: named after one of them, importing it, or calling ``names``.

    Ranked: files that call one of ``names`` first, then by name match, then imports; at most
    :data:`MAX_TEST_FILES`. Test files in ``files`` themselves count as related.
    """
    modules = {
        module_name(f) for f in files if _SOURCE.search(f) and not TEST_FILE.match(PurePosixPath(f).name)
    }
    scored: list[tuple[int, str]] = []
    for rel in test_files(root):
        score = 0
        if rel in files:
            score += 8
        if module_tested(rel) in modules:
            score += 4
        try:
            changes.settle(root, rel)
            if os.path.islink(full := os.path.join(root, rel)):
                changes.settle_all(root)  # where it leads may be left for later too
            with open(full, encoding="utf-8", errors="replace") as fh:
                text = fh.read(400_000)
        except OSError:
            continue
        if any(re.search(rf"\b{re.escape(n)}\s*\(", text) for n in names):
            score += 6
        if any(re.search(rf"^\s*(from|import)\s+[\w.]*\b{re.escape(m)}\b", text, re.M) for m in modules):
            score += 2
        elif any(
            re.search(rf"""(require\(|\bfrom\s+|\bimport\s+)['"][\w./-]*\b{re.escape(m)}\b""", text)
            for m in modules
        ):
            score += 2  # require("./lib"), import x from "../src/lib"
        if score:
            scored.append((-score, rel))
    return [rel for _, rel in sorted(scored)[:MAX_TEST_FILES]]


def selection_words(names: set[str]) -> list[str]:
    """pytest ``-k`` words that select the tests of ``names``: each name, and for a snake_case one its words run
    together, which is how a test class names it (``-k`` ignores case: ``TestAlwaysIterable`` holds
    ``alwaysiterable``, not ``always_iterable``; seen on more-itertools, the selection took other tests, which
    passed, and the worker was told its broken function passed its tests)."""
    words = set(names)
    words |= {name.replace("_", "") for name in names if "_" in name.strip("_")}
    return sorted(words)


def targeted_command(check: str, tests: list[str], names: set[str]) -> str | None:
    """The project's ``check`` narrowed to ``tests`` (and, for pytest, to ``names``); None: not narrowable."""
    if not check.strip() or not tests:
        return None
    quoted = " ".join(shlex.quote(t) for t in tests)
    if "pytest" in check:
        base = check.split("pytest", 1)[0] + "pytest"
        selector = f" -k {shlex.quote(' or '.join(selection_words(names)))}" if names else ""
        return f"{base} -q -x -p no:cacheprovider --no-header -rN --tb=short -l {quoted}{selector}"
    if "unittest" in check:
        base = check.split("unittest", 1)[0] + "unittest"
        dotted = " ".join(shlex.quote(t.removesuffix(".py").replace("/", ".")) for t in tests)
        return f"{base} {dotted}"
    return None


@dataclass
class CheckRun:
    command: str
    exit_code: int | None
    output: str
    timed_out: bool = False

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def fixed_since(self, first: CheckRun | None) -> bool:
        """These tests failed in ``first`` (the same command, before the worker's edits) and pass now."""
        return (
            first is not None
            and not first.passed
            and first.exit_code is not None
            and self.passed
            and self.command == first.command
        )

    def better_than(self, before: CheckRun | None) -> bool:
        """Passed, or fewer failures (unittest) / more tests passing before the first failure (pytest ``-x``)
        than ``before`` of the same command: an edit that made progress is kept, not drawn again."""
        if self.passed:
            return True
        if (
            before is None
            or before.command != self.command
            or before.exit_code is None
            or self.exit_code is None
        ):
            return False
        failed, passed = _counts(self.output)
        failed_before, passed_before = _counts(before.output)
        return failed < failed_before or (failed <= failed_before and passed > passed_before)

    def summary(self) -> str:
        """One short line for a prompt: passed, or the failing tests and the first error."""
        if self.passed:
            return f"`{self.command}`: PASSED"
        if self.exit_code is None:
            return f"`{self.command}`: {'TIMED OUT' if self.timed_out else 'could not run'}"
        failing = re.findall(r"^(?:FAILED|ERROR) (\S+)", self.output, re.M)
        errors = re.findall(r"^E\s+(.+)$", self.output, re.M)
        said = f"; failing: {', '.join(failing[:5])}" if failing else ""
        said += f"; first error: {errors[0].strip()[:200]}" if errors else ""
        return f"`{self.command}`: FAILED (exit {self.exit_code}){said}"

    def observation(self) -> str:
        """What the worker is shown after its edit."""
        if self.exit_code is None and not self.timed_out:
            return f"CHECK could not run: {self.output.strip()[:500]}"
        verdict = (
            "PASSED"
            if self.passed
            else ("TIMED OUT" if self.timed_out else f"FAILED (exit {self.exit_code})")
        )
        tail = self.output.strip()[-OUTPUT_TAIL:]
        return f"CHECK `{self.command}`: {verdict}\n{tail}".rstrip()


def _counts(output: str) -> tuple[int, int]:
    """(failed + errors, passed) from a pytest summary line or unittest's last lines; unknown counts are 0."""
    found = {k: int(n) for n, k in re.findall(r"(\d+) (failed|passed|errors?)\b", output)}
    found |= {k: int(n) for k, n in re.findall(r"\b(failures|errors)=(\d+)", output)}
    ran = re.search(r"^Ran (\d+) tests?", output, re.M)
    failed = (
        found.get("failed", 0) + found.get("failures", 0) + found.get("errors", 0) + found.get("error", 0)
    )
    passed = found.get("passed", 0) or (int(ran.group(1)) - failed if ran else 0)
    return failed, passed


async def run_check(
    command: str, root: str, sandbox: object, timeout: float, secret_names: frozenset[str] = frozenset()
) -> CheckRun:
    result = await run_command(command, root, sandbox, timeout=timeout, extra_secret_names=secret_names)  # type: ignore[arg-type]
    if result.refused:
        return CheckRun(command, None, result.output)
    return CheckRun(command, result.exit_code, result.output, result.timed_out)


async def check_after_edit(
    check: str,
    root: str,
    tests: list[str],
    names: set[str],
    sandbox: object,
    timeout: float,
    secret_names: frozenset[str] = frozenset(),
) -> CheckRun | None:
    """Run the narrowest check for an edit: targeted when possible (widened if it selects nothing), else the
    project's whole check; None when the project has no check."""
    if not check.strip():
        return None
    command = targeted_command(check, tests, names)
    if command is None:
        return await run_check(check, root, sandbox, timeout, secret_names)
    run = await run_check(command, root, sandbox, timeout, secret_names)
    if run.exit_code == NO_TESTS_RAN and names:  # the -k selection matched nothing: the files' tests, then
        command = targeted_command(check, tests, set())
        if command is not None:
            run = await run_check(command, root, sandbox, timeout, secret_names)
    return run
