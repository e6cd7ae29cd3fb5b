"""The project's check: which command it is, running it sandboxed in a folder, and which tests it says fail.

Used by the landing gate (:mod:`formicary.agents.git.gate`), the judge, and a worker that wants the check's word
after a write (:func:`check_after_write`, targeted to the tests of the touched modules when it can be).

Detection reads the tree (a list of paths and a reader), never runs anything the repository provides: pytest
(configured, or test files and pytest importable by ``python3``), ``python3 -m unittest``, ``npm test`` (a real
``test`` script), ``cargo test``, ``go test ./...``, ``make test`` — in that order.

Failing test ids come from the runner where it names them: pytest's junit XML (the gate adds ``--junitxml`` to a
plain pytest command) or its ``FAILED``/``ERROR`` summary lines, unittest's ``FAIL:``/``ERROR:`` headers, go's
``--- FAIL:``, cargo's ``test … FAILED``, TAP's ``not ok``, jest's, vitest's and mocha's failure headers, or a
junit XML file the config names. Otherwise ``failing`` is None and only the exit status counts.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sandbox import SandboxLike, run_command
from .targeted import test_files

JUNIT_FILE = ".formicary-check-junit.xml"
"""Where a pytest check writes its junit XML inside the checkout (removed after reading)."""
JUNIT_MAX_BYTES = 20_000_000
TAIL_CHARS = 4000
_SHELL_META = re.compile(r"[;&|<>()$`\\\n]")
_PYTEST_LINE = re.compile(r"^(?:FAILED|ERROR) ([^\s(]\S*)", re.M)  # not unittest's "FAILED (failures=1)"
_UNITTEST_LINE = re.compile(r"^(?:FAIL|ERROR): (\S+) \(([^)\s]+)\)", re.M)
_GO_LINE = re.compile(r"^\s*--- FAIL: (\S+)", re.M)
_GO_PKG = re.compile(r"^FAIL\s+(\S+)\s", re.M)
_CARGO_LINE = re.compile(r"^test (\S+) \.\.\. FAILED", re.M)
_TAP_LINE = re.compile(r"^\s*not ok \d+(?: -)? (.+)$", re.M)  # TAP: node --test, tape
_TAP_DIRECTIVE = re.compile(r"\s#\s*(TODO|SKIP)\b", re.I)  # an expected failure, or a skip: not a failure
_JEST_LINE = re.compile(r"^\s*● (.+?)\s*$", re.M)  # jest's failure headers: "● suite › test"
_VITEST_LINE = re.compile(r"^\s*FAIL\s+(\S+ > .+?)\s*$", re.M)  # vitest: "FAIL  lib.test.js > suite > test"
_MOCHA_FAILING = re.compile(r"^\s*\d+ failing\s*$", re.M)  # mocha's summary, then its numbered failures
_MOCHA_ENTRY = re.compile(r"^\s*\d+\) (.+)$")
_NPM_PLACEHOLDER = "no test specified"


@dataclass(frozen=True)
class CheckSpec:
    """The check a session runs: ``command`` ("" for none), what it is and where it came from."""

    command: str = ""
    runner: str = "none"
    """pytest | unittest | npm | cargo | go | make | custom | none"""
    source: str = "none"
    """config | --check | detected | none"""
    junit: str = ""
    """A junit XML file the command writes, relative to the checkout ("" none)."""

    @property
    def enabled(self) -> bool:
        return bool(self.command)

    def describe(self) -> str:
        """One line for headless output, the TUI and the record."""
        if not self.command:
            return "none found (parse gate only)" if self.source == "detected" else "none (parse gate only)"
        return f"{self.command} ({self.source}{', ' + self.runner if self.source == 'detected' else ''})"


@dataclass
class CheckResult:
    """One run of the check on one tree."""

    command: str
    exit_code: int | None
    output: str
    """The output's tail."""
    duration_ms: float = 0.0
    timed_out: bool = False
    refused: bool = False
    failing: frozenset[str] | None = None
    """Ids of failing tests when the runner names them (None: only the exit status is known)."""
    passed: int | None = None
    tree: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.refused

    def summary(self) -> str:
        if self.refused:
            return "could not run (no sandbox)"
        if self.timed_out:
            return "timed out"
        if self.ok:
            return "passed" + (f" ({self.passed} tests)" if self.passed is not None else "")
        if self.failing:
            return f"{len(self.failing)} failing (exit code {self.exit_code})"
        return f"failed (exit code {self.exit_code})"

    def as_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "failing": sorted(self.failing) if self.failing is not None else None,
            "passed": self.passed,
            "duration_ms": round(self.duration_ms, 1),
        }


# -- detection ---------------------------------------------------------------------------------------------


_PYTEST_PROBE: dict[str, bool] = {}
_PROBE_LOCK = threading.Lock()


def python_has_pytest(python: str | None = None) -> bool:
    """Whether ``python3`` on PATH (what a sandboxed check runs) can import pytest; probed once. Blocks."""
    exe = python or shutil.which("python3")
    if not exe:
        return False
    with _PROBE_LOCK:
        if exe not in _PYTEST_PROBE:
            try:
                done = subprocess.run(
                    [exe, "-I", "-c", "import pytest"], capture_output=True, timeout=30, check=False
                )
                _PYTEST_PROBE[exe] = done.returncode == 0
            except (OSError, subprocess.SubprocessError):
                _PYTEST_PROBE[exe] = False
        return _PYTEST_PROBE[exe]


def _is_python_test(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def detect(
    paths: Iterable[str], read: Callable[[str], str | None], has_pytest: Callable[[], bool]
) -> CheckSpec:
    """The check a repository's files suggest, or ``CheckSpec()`` when none.

    Args:
        paths: every file path in the tree (posix, relative).
        read: returns a top-level file's text (None when absent); only small config files are read.
        has_pytest: whether the sandbox's ``python3`` has pytest (asked only for a Python project).
    """
    files = set(paths)

    def text(name: str) -> str:
        return (read(name) or "") if name in files else ""

    pyproject, setup_cfg, tox = text("pyproject.toml"), text("setup.cfg"), text("tox.ini")
    configured = (
        "pytest.ini" in files
        or "[tool.pytest" in pyproject
        or "[tool:pytest]" in setup_cfg
        or "[pytest]" in tox
        or any(p.rsplit("/", 1)[-1] == "conftest.py" for p in files)
    )
    tests = [p for p in files if _is_python_test(p)]
    if (configured or tests) and has_pytest():
        return CheckSpec(pytest_command(), "pytest", "detected")
    if tests and any(p.rsplit("/", 1)[-1].startswith("test") for p in tests):
        return CheckSpec("python3 -m unittest", "unittest", "detected")
    if "package.json" in files:
        try:
            script = (json.loads(read("package.json") or "{}").get("scripts") or {}).get("test")
        except (ValueError, AttributeError):
            script = None
        if isinstance(script, str) and script.strip() and _NPM_PLACEHOLDER not in script:
            return CheckSpec("npm test", "npm", "detected")
    if "Cargo.toml" in files:
        return CheckSpec("cargo test", "cargo", "detected")
    if "go.mod" in files:
        return CheckSpec("go test ./...", "go", "detected")
    for name in ("Makefile", "makefile", "GNUmakefile"):
        if name in files and re.search(r"^test\s*:", read(name) or "", re.M):
            return CheckSpec("make test", "make", "detected")
    return CheckSpec()


def pytest_command(args: str = "") -> str:
    return f"python3 -m pytest -q -p no:cacheprovider{' ' + args if args else ''}"


def spec_for(command: str, source: str, junit: str = "") -> CheckSpec:
    """A check the operator named (config or ``--check``): ``none`` turns it off; the runner is guessed."""
    command = command.strip()
    if command.lower() == "none":
        return CheckSpec("", "none", source)
    return CheckSpec(command, runner_of(command), source, junit)


def runner_of(command: str) -> str:
    try:
        words = shlex.split(command)
    except ValueError:
        return "custom"
    if not words:
        return "none"
    head = words[0].rsplit("/", 1)[-1]
    if head in ("pytest", "py.test") or (head.startswith("python") and words[1:3] == ["-m", "pytest"]):
        return "pytest"
    if head.startswith("python") and words[1:3] == ["-m", "unittest"]:
        return "unittest"
    return {"npm": "npm", "cargo": "cargo", "go": "go", "make": "make"}.get(head, "custom")


def _runnable(spec: CheckSpec) -> tuple[str, str]:
    """The command line actually run, and the junit file to read: a plain pytest command gets ``--junitxml``."""
    plain = spec.runner == "pytest" and not spec.junit and not _SHELL_META.search(spec.command)
    if plain and "--junitxml" not in spec.command and "--junit-xml" not in spec.command:
        return f"{spec.command} --junitxml={JUNIT_FILE}", JUNIT_FILE
    return spec.command, spec.junit


# -- failing test ids --------------------------------------------------------------------------------------


def parse_junit(data: bytes) -> tuple[frozenset[str], int] | None:
    """``(failing ids, passed count)`` from junit XML; None when it is not junit XML."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(data)
    except (ET.ParseError, ValueError):
        return None
    failing, passed = set(), 0
    for case in root.iter("testcase"):
        name = f"{case.get('classname') or ''}::{case.get('name') or ''}".strip(":")
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            failing.add(name)
        elif "skipped" not in tags:
            passed += 1
    if root.tag not in ("testsuites", "testsuite"):
        return None
    return frozenset(failing), passed


def failing_ids(output: str, runner: str = "custom") -> list[str]:
    """Failing test ids named in a runner's text output, in the order it names them, each once (empty when it
    names none). ``custom`` and ``make`` read every format known here."""
    every = runner in ("custom", "make")
    found: list[tuple[int, str]] = []
    if every or runner == "pytest":
        found += [(m.start(), m.group(1)) for m in _PYTEST_LINE.finditer(output)]
    if every or runner == "unittest":
        # "FAIL: test_x (mod.Class.test_x)" (3.11+) or "(mod.Class)"
        for m in _UNITTEST_LINE.finditer(output):
            method, where = m.group(1), m.group(2)
            found.append((m.start(), where if where.endswith("." + method) else f"{where}.{method}"))
    if every or runner == "go":
        found += [(m.start(), m.group(1)) for m in _GO_LINE.finditer(output)]
        found += [(m.start(), f"package {m.group(1)}") for m in _GO_PKG.finditer(output)]
    if every or runner == "cargo":
        found += [(m.start(), m.group(1)) for m in _CARGO_LINE.finditer(output)]
    if every or runner == "npm":
        found += [
            (m.start(), m.group(1).strip())
            for m in _TAP_LINE.finditer(output)
            if not _TAP_DIRECTIVE.search(m.group(1))
        ]
        for pattern in (_JEST_LINE, _VITEST_LINE):
            found += [(m.start(), m.group(1)) for m in pattern.finditer(output)]
        found += _mocha_failures(output)
    return list(dict.fromkeys(name for _, name in sorted(found)))


def _mocha_failures(output: str) -> list[tuple[int, str]]:
    """Mocha's failures after its "N failing" line: ``  1) suite`` then deeper titles, the test's ending in a
    colon, as ``suite › test`` (the numbered lines before the summary are its progress, not ids)."""
    summary = _MOCHA_FAILING.search(output)
    if summary is None:
        return []
    found: list[tuple[int, str]] = []
    lines = output[summary.end() :].split("\n")
    offset = summary.end()
    for i, line in enumerate(lines):
        if (entry := _MOCHA_ENTRY.match(line)) is not None:
            titles: list[str] = []
            for title in [entry.group(1), *lines[i + 1 : i + 9]]:
                titles.append(title.strip())
                if titles[-1].endswith(":"):
                    found.append((offset, " › ".join(titles)[:-1].rstrip()))
                    break
        offset += len(line) + 1
    return found


def failing_from_output(runner: str, output: str) -> frozenset[str]:
    """Failing test ids named in a runner's text output (empty when it names none)."""
    return frozenset(failing_ids(output, runner))


# -- running -----------------------------------------------------------------------------------------------


async def run_check(
    folder: str | Path,
    spec: CheckSpec,
    sandbox: SandboxLike = None,
    *,
    timeout: float | None = None,
    extra_secret_names: Iterable[str] = (),
) -> CheckResult:
    """Run ``spec`` in ``folder`` in the sandbox; the result names failing tests where the runner does.

    The folder is left as the command left it, minus the junit file this function asked for.
    """
    import anyio

    if not spec.enabled:
        return CheckResult("", 0, "no check", 0.0)
    command, junit = _runnable(spec)
    junit_path = Path(folder) / junit if junit else None
    if junit_path is not None:
        await anyio.to_thread.run_sync(_unlink, junit_path)
    started = time.perf_counter()
    done = await run_command(command, folder, sandbox, timeout=timeout, extra_secret_names=extra_secret_names)
    result = CheckResult(
        spec.command,
        done.exit_code,
        done.text[-TAIL_CHARS:],
        (time.perf_counter() - started) * 1000,
        timed_out=done.timed_out,
        refused=done.refused,
    )
    parsed = None
    if junit_path is not None:
        parsed = await anyio.to_thread.run_sync(_read_junit, junit_path, junit == JUNIT_FILE)
    if parsed is not None:
        result.failing, result.passed = parsed
    elif not result.refused:
        result.failing = failing_from_output(spec.runner, done.output)
    if result.failing is not None and not result.failing and not result.ok:
        result.failing = None  # it failed without naming a test: only the exit status is known
    return result


def _unlink(path: Path) -> None:
    if path.is_file() and not path.is_symlink():
        path.unlink()


def _read_junit(path: Path, remove: bool) -> tuple[frozenset[str], int] | None:
    """Read the junit file the check wrote (a regular file under the cap only: the checkout is hostile)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > JUNIT_MAX_BYTES:
            return None
        return parse_junit(path.read_bytes())
    except OSError:
        return None
    finally:
        if remove:
            _unlink(path)


# -- a worker's check after a write ------------------------------------------------------------------------


def related_tests(folder: str | Path, touched: Iterable[str]) -> list[str]:
    """Test files that go with ``touched`` Python files: the touched tests themselves, ``test_<mod>.py`` and
    ``<mod>_test.py`` anywhere in the tree (as :func:`.targeted.test_files` finds test files)."""
    names: set[str] = set()
    direct: list[str] = []
    for path in touched:
        base = path.rsplit("/", 1)[-1]
        if not base.endswith(".py"):
            continue
        if _is_python_test(path):
            direct.append(path)
        stem = base[:-3]
        names |= {f"test_{stem}.py", f"{stem}_test.py"}
    found = list(dict.fromkeys(direct))
    if not names:
        return found
    found += [rel for rel in test_files(os.path.realpath(folder)) if rel.rsplit("/", 1)[-1] in names]
    return list(dict.fromkeys(found))


def targeted(spec: CheckSpec, folder: str | Path, touched: Iterable[str]) -> CheckSpec:
    """``spec`` narrowed to the tests of the touched modules (pytest or unittest), else ``spec`` itself."""
    if spec.runner not in ("pytest", "unittest") or _SHELL_META.search(spec.command):
        return spec
    tests = related_tests(folder, touched)
    if not tests:
        return spec
    if spec.runner == "pytest":
        return CheckSpec(f"{spec.command} {' '.join(shlex.quote(t) for t in tests)}", "pytest", spec.source)
    modules = [t[:-3].replace("/", ".") for t in tests]
    if not all(re.fullmatch(r"[A-Za-z_][\w.]*", m) for m in modules):
        return spec
    return CheckSpec(f"{spec.command} {' '.join(modules)}", "unittest", spec.source)


@dataclass
class WriteCheck:
    """What :func:`check_after_write` ran and found."""

    spec: CheckSpec
    result: CheckResult
    targeted: bool = False
    notes: list[str] = field(default_factory=list)

    def observation(self, tail: int = 1500) -> str:
        """A few lines for the worker's next prompt."""
        scope = "the tests of the files you changed" if self.targeted else "the whole check"
        head = f"CHECK `{self.spec.command}` ({scope}): {self.result.summary()}"
        if self.result.ok:
            return head
        names = sorted(self.result.failing or [])[:10]
        listed = "".join(f"\n- {n}" for n in names)
        return f"{head}{listed}\n{self.result.output[-tail:]}"


async def check_after_write(
    folder: str | Path,
    spec: CheckSpec,
    touched: Iterable[str],
    sandbox: SandboxLike = None,
    *,
    timeout: float | None = None,
    extra_secret_names: Iterable[str] = (),
) -> WriteCheck | None:
    """Run the check (targeted to the touched modules' tests when it can be) in a worker's worktree.

    None when the session has no check. Meant to run after each write, so a worker sees edit → test without
    spending a model step on ``run``.
    """
    if not spec.enabled:
        return None
    narrow = targeted(spec, folder, list(touched))
    result = await run_check(folder, narrow, sandbox, timeout=timeout, extra_secret_names=extra_secret_names)
    return WriteCheck(narrow, result, targeted=narrow is not spec)


# -- can the named check start at all ----------------------------------------------------------------------

_SHELL_WORDS = (
    "! { ( [ [[ . : builtin case cd command eval exec export for if set source test time until while"
)
SHELL_WORDS = frozenset(_SHELL_WORDS.split())
"""Shell keywords and builtins a check may start with: nothing on PATH to look up, so not probed."""


def program_of(command: str) -> str | None:
    """The program a check command starts, when it is a bare name to look up on PATH (None: a path, a shell
    word, or a command that cannot be split, which the check's own run will judge)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    words = [w for w in words if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", w)] or [""]
    head = words[0]
    if not head or "/" in head or head in SHELL_WORDS or re.search(r"[;&|<>()$`*?]", head):
        return None
    return head


async def missing_program(
    command: str, sandbox: SandboxLike = None, checkout: str | None = None
) -> str | None:
    """The check's program when the sandbox cannot find it (``command -v`` fails there), else None. Why: a
    typo in ``--check`` (exit 127, "command not found") fails on every tree alike, so the gate let everything
    through as "no new failure" and a session ran for minutes against a check that never ran a test."""
    import tempfile

    program = program_of(command)
    if program is None:
        return None
    with tempfile.TemporaryDirectory(prefix="formicary-probe-") as empty:
        done = await run_command(
            f"command -v -- {shlex.quote(program)}", empty, sandbox, timeout=30, checkout=checkout
        )
    if done.refused or done.timed_out:
        return None  # no sandbox here: the session reports that itself
    return program if done.exit_code != 0 else None
