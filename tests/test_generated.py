"""A project's own code is what its checks run in a worktree: the src layout is on the import path, and the
ignored files its build generated (``_version.py``) are there too, without ever landing in a commit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from formicary.agents.git.generated import find_generated, provide
from formicary.agents.session.engine import Engine
from formicary.agents.tools.sandbox import SandboxOptions, run_command
from formicary.store.db import connect
from formicary.summary import Summary, load_summary
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, task, write
from tests.test_engine import settings_for
from tests.test_sandbox import needs_bwrap

pytestmark = pytest.mark.anyio

INIT = (
    'from ._version import VERSION\n\n\ndef double(x):\n    """Twice x."""\n    raise NotImplementedError\n'
)
FIXED = INIT.replace("raise NotImplementedError", "return x * 2")
TEST = (
    "import unittest\n\nfrom mypkg import double\n\n\n"
    "class T(unittest.TestCase):\n    def test_double(self):\n        self.assertEqual(double(2), 4)\n"
)
VERSION = "src/mypkg/_version.py"


def src_layout(tmp_path: Path) -> Path:
    """A src-layout project whose ``_version.py`` is ignored and exists only in the operator's checkout."""
    from tests.gitrepo import make_repo

    repo = make_repo(
        tmp_path / "repo",
        {
            ".gitignore": "src/mypkg/_version.py\nbuild/\nnotes/*.py\n",
            "src/mypkg/__init__.py": INIT,
            "tests/__init__.py": "",
            "tests/test_double.py": TEST,
            "notes/README.md": "x\n",
        },
    )
    (repo / VERSION).write_text('VERSION = "1.0"\n')
    return repo


async def one_session(tmp_path: Path, repo: Path, team, goal: str, check: str = "") -> tuple[Engine, Summary]:
    """One cycle, one worker, ``check`` (detected when empty); it must end done. The engine and its summary."""
    db_path = tmp_path / "f.db"
    with ScriptedServer(responder=team) as server:
        settings = settings_for(server, cycles=1, workers=1)
        settings.check_command = check
        engine = Engine.create(settings, repo, goal, db_path=db_path)
        outcome = await engine.run()
    assert outcome.status == "done", outcome.reason
    db = connect(db_path, readonly=True, migrate=False)
    try:
        return engine, load_summary(db, engine.session_id)
    finally:
        db.conn.close()


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


async def test_generated_files_are_found_in_packages_only(tmp_path):
    repo = src_layout(tmp_path)
    (repo / "build").mkdir()
    (repo / "build" / "lib.py").write_text("x = 1\n")  # an ignored folder: never walked
    (repo / "notes" / "scratch.py").write_text("x = 1\n")  # ignored, but no package holds it
    (repo / "src/mypkg/__pycache__").mkdir()
    outside = tmp_path / "secret.py"
    outside.write_text("TOKEN = 'x'\n")
    (repo / "src/mypkg/_secret.py").symlink_to(outside)  # ignored by nothing: not a candidate either
    (repo / ".gitignore").write_text("src/mypkg/_version.py\nsrc/mypkg/_link.py\nbuild/\nnotes/*.py\n")
    (repo / "src/mypkg/_link.py").symlink_to(outside)
    head = git_out(repo, "rev-parse", "HEAD").strip()
    found = await find_generated(repo, repo / ".git", head)
    assert found == {VERSION: b'VERSION = "1.0"\n'}

    wt = tmp_path / "wt"
    (wt / "src").mkdir(parents=True)
    (wt / "src" / "mypkg").symlink_to(tmp_path / "elsewhere")  # an agent's link: nothing goes through it
    (tmp_path / "elsewhere").mkdir()
    assert provide(wt, found) == []
    assert not (tmp_path / "elsewhere" / "_version.py").exists()


@needs_bwrap
async def test_a_sandboxed_command_imports_the_worktrees_src_layout(tmp_path):
    wt = tmp_path / "wt"
    (wt / "src" / "mypkg").mkdir(parents=True)
    (wt / "src" / "mypkg" / "__init__.py").write_text("")
    result = await run_command(
        'python3 -c "import mypkg; print(mypkg.__file__)"', wt, SandboxOptions(mode="bubblewrap", timeout=20)
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == os.path.join(os.path.realpath(wt), "src", "mypkg", "__init__.py")


async def test_the_check_runs_the_worktrees_code_with_its_generated_files(tmp_path):
    repo = src_layout(tmp_path)
    team = ScriptedTeam(
        root_plans=[plan([task("Fix double", files=["src/mypkg/__init__.py"])])],
        # the worker also un-ignores the generated file: it still must not land
        work={
            "Fix double": [write(".gitignore", "build/\n"), write("src/mypkg/__init__.py", FIXED), finish()]
        },
    )
    engine, summary = await one_session(
        tmp_path, repo, team, "Fix double() in src/mypkg", "python3 -m unittest"
    )
    # the start fails on NotImplementedError (not on a missing module or _version), the end passes
    assert summary.check_start is not None and summary.check_start.passed is False
    assert summary.check_end is not None and summary.check_end.passed is True
    branch = f"formicary/{engine.session_id}"
    assert git_out(repo, "show", f"{branch}:src/mypkg/__init__.py") == FIXED
    assert VERSION not in git_out(repo, "ls-tree", "-r", "--name-only", branch).split()
    assert (repo / VERSION).read_text() == 'VERSION = "1.0"\n'  # the operator's file, untouched
