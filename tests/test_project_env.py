"""The project's own virtualenv (``.venv`` at the top of its checkout, ignored by git) is what its check runs
with in every worktree, and what detection probes for pytest: its test dependencies are there, not on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from formicary.agents.git.generated import find_project_env
from formicary.agents.tools.project_env import command_env, project_venv
from tests.gitrepo import git, make_repo
from tests.scripted_server import ScriptedServer
from tests.scripted_team import ScriptedTeam, finish, plan, task, write
from tests.test_generated import one_session

pytestmark = pytest.mark.anyio

CALC = "def double(x):\n    raise NotImplementedError\n"
TEST = "import projdep\nfrom calc import double\n\n\ndef test_double():\n    assert double(2) == 4 * projdep.ONE\n"


def with_venv(repo: Path) -> Path:
    """A virtualenv's shape at ``repo/.venv``: its ``python3`` runs this interpreter with a package (``projdep``)
    that only this environment has, and notes each run in ``runs.txt``."""
    venv = repo / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "deps").mkdir()
    (venv / "deps" / "projdep.py").write_text("ONE = 1\n")
    (venv / "pyvenv.cfg").write_text(f"home = {Path(sys.executable).resolve().parent}\n")
    python = venv / "bin" / "python3"
    python.write_text(
        f'#!/bin/sh\necho "$*" >> {venv}/runs.txt 2>/dev/null\n'
        f'export PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{venv}/deps"\nexec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    return venv


async def test_a_command_in_a_worktree_gets_the_projects_venv_first(tmp_path):
    repo = make_repo(tmp_path / "repo", {".gitignore": ".venv/\n", "calc.py": CALC})
    venv = with_venv(repo)
    assert await find_project_env(repo) == str(venv.resolve()) == project_venv(str(repo))
    env = command_env(str(tmp_path / "wt"), "/usr/bin:/bin", checkout=str(repo))
    assert env["PATH"] == f"{venv.resolve()}/bin:/usr/bin:/bin" and env["VIRTUAL_ENV"] == str(venv.resolve())
    assert env["PYTHONPATH"] == str(tmp_path / "wt")
    linked = tmp_path / "linked"  # a symlinked .venv is not taken (it could lead anywhere)
    make_repo(linked, {"a.txt": "x\n"})
    (linked / ".venv").symlink_to(venv)
    assert await find_project_env(linked) is None
    unignored = make_repo(tmp_path / "unignored", {"a.txt": "x\n"})
    with_venv(
        unignored
    )  # not ignored: not the project's environment (and the session refuses the dirty tree)
    assert await find_project_env(unignored) is None


def test_a_virtualenv_the_repository_commits_never_runs_on_the_host(tmp_path):
    """A hostile repository tracks ``.venv/bin/python3``: detection must not probe it, commands must not use it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    payload = f"#!/bin/sh\necho ran >> {outside}/ESCAPED\nexit 0\n"
    repo = make_repo(
        tmp_path / "repo",
        {
            ".venv/pyvenv.cfg": f"home = {Path(sys.executable).resolve().parent}\n",
            ".venv/bin/python3": payload,
            "tests/test_calc.py": TEST,
            "calc.py": CALC,
        },
    )
    git(repo, "update-index", "--chmod=+x", ".venv/bin/python3")
    git(repo, "commit", "-q", "-m", "an executable python3")
    (repo / ".venv" / "bin" / "python3").chmod(0o755)
    team = ScriptedTeam(
        root_plans=[plan([task("Note", files=["note.txt"])])],
        work={"Note": [write("note.txt", "x\n"), finish()]},
    )
    with ScriptedServer(responder=team) as server:
        env = dict(
            os.environ,
            FORMICARY_HOME=str(tmp_path / "home"),
            FORMICARY_MODEL__BASE_URL=server.base_url,
            FORMICARY_LIMITS__CYCLES="1",
            FORMICARY_SANDBOX__MODE="none",  # so a command that took it would run it on the host too
        )
        result = subprocess.run(
            [sys.executable, "-m", "formicary", "run", "--repo", str(repo), "--goal", "note", "--headless"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert not (outside / "ESCAPED").exists(), "the repository's own python3 ran"
    assert result.returncode == 0, result.stdout + result.stderr


async def test_the_detected_check_runs_with_the_projects_venv_in_each_worktree(tmp_path):
    repo = make_repo(
        tmp_path / "repo",
        {".gitignore": ".venv/\n", "calc.py": CALC, "tests/__init__.py": "", "tests/test_calc.py": TEST},
    )
    venv = with_venv(repo)
    fixed = CALC.replace("raise NotImplementedError", "return x * 2")
    team = ScriptedTeam(
        root_plans=[plan([task("Fix double", files=["calc.py"])])],
        work={"Fix double": [write("calc.py", fixed), finish()]},
    )
    engine, summary = await one_session(tmp_path, repo, team, "Make tests/test_calc.py pass")  # detected
    assert engine.check.runner == "pytest" and engine.check.source == "detected"
    assert "-I -c import pytest" in (venv / "runs.txt").read_text()  # detection asked the project's python
    assert summary.check_start is not None and summary.check_start.passed is False
    assert summary.check_end is not None and summary.check_end.passed is True
