"""A worker's copy catches up with what landed since its task began (git/catch_up.py), without touching its work.

What a user would lose if it broke: a worker testing against a stale copy (others' fixes missing, so it edits
their files too), or worse, a catch-up that overwrote the worker's own edits or made its commit revert others'."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gitrepo import git
from tests.test_follow_changes import committed, session_of, write
from tests.test_reset import land


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def moved_tip(session, change: dict[str, str | None]) -> str:
    tip = land(session.root, session.branch, change, "another task landed")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")
    return tip


@pytest.mark.anyio
async def test_landed_files_come_in_and_the_worker_s_edit_stays(tmp_path: Path) -> None:
    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as wt:
        base = wt.base
        await write(wt.path, "src/d01/file001.txt", "the worker's edit\n")
        tip = await moved_tip(session, {"src/d02/file002.txt": "landed by another task\n"})
        came = await session.catch_up(wt, {"src/d01/file001.txt"})
        assert came == ["src/d02/file002.txt"] and wt.base == tip != base
        assert (wt.path / "src/d02/file002.txt").read_text() == "landed by another task\n"
        assert (wt.path / "src/d01/file001.txt").read_text() == "the worker's edit\n"
        sha = await session.commit(wt, "edit")
        assert committed(session.root, sha) == {"src/d01/file001.txt"}  # only the task's change, on the tip
        assert (await session.integrate(wt)).status == "integrated"
        shown = git(session.root, "show", f"{session.branch}:src/d02/file002.txt")
        assert shown == "landed by another task" and "src/d01" in git(session.root, "log", "-1", "--stat")
        assert await session.catch_up(wt, set()) == []  # committed: no more catching up
    await session.close()


@pytest.mark.anyio
async def test_nothing_moves_when_a_landed_change_touches_an_edited_file(tmp_path: Path) -> None:
    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as wt:
        base = wt.base
        await write(wt.path, "src/d01/file001.txt", "the worker's edit\n")
        await moved_tip(
            session, {"src/d01/file001.txt": "another task's edit\n", "src/d02/file002.txt": "x\n"}
        )
        assert await session.catch_up(wt, {"src/d01/file001.txt"}) == []
        assert wt.base == base and git(wt.path, "rev-parse", "HEAD") == base
        assert (wt.path / "src/d01/file001.txt").read_text() == "the worker's edit\n"
        assert (wt.path / "src/d02/file002.txt").read_text() != "x\n"
    await session.close()


@pytest.mark.anyio
async def test_git_refuses_to_overwrite_a_file_the_tools_did_not_write(tmp_path: Path) -> None:
    """An untracked file a command left where the tip adds one: kept, and the copy stays where it was."""
    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as wt:
        base = wt.base
        (wt.path / "made_by_a_command.txt").write_text("a command's output\n")
        await moved_tip(session, {"made_by_a_command.txt": "landed\n"})
        assert await session.catch_up(wt, set()) == []
        assert wt.base == base and (wt.path / "made_by_a_command.txt").read_text() == "a command's output\n"
    await session.close()


@pytest.mark.anyio
async def test_a_worker_s_tests_see_a_fix_another_worker_landed_meanwhile(tmp_path: Path) -> None:
    """Two workers: one fixes a helper, the other's function uses it. The second edits after the first landed
    (it waits on a command first); its tests pass at once, because its copy caught up, and its note says so."""
    from formicary.agents.session.engine import Engine
    from tests.gitrepo import make_repo
    from tests.scripted_server import ScriptedServer
    from tests.scripted_team import ScriptedTeam, finish, plan, run, task
    from tests.scripted_team import write as write_action
    from tests.test_worker_steps import actions, settings_for

    files = {
        "helper.py": "def scale(x):\n    return None\n",
        "units.py": "from helper import scale\n\n\ndef c_to_f(c):\n    return None\n",
        "test_units.py": "import unittest\nfrom units import c_to_f\n\n\nclass T(unittest.TestCase):\n"
        "    def test_boils(self):\n        self.assertEqual(c_to_f(100), 212)\n",
        "test_helper.py": "import unittest\nfrom helper import scale\n\n\nclass H(unittest.TestCase):\n"
        "    def test_scale(self):\n        self.assertEqual(scale(100), 212)\n",
    }
    helper = task("Fix scale in helper.py", "Make scale convert.", files=["helper.py"])
    units = task("Fix c_to_f in units.py", "Make c_to_f use scale.", files=["units.py"])
    fixed_units = "from helper import scale\n\n\ndef c_to_f(c):\n    return scale(c)\n"
    team = ScriptedTeam(
        root_plans=[plan([helper, units])],
        work={
            helper["title"]: [
                write_action("helper.py", "def scale(x):\n    return x * 9 / 5 + 32\n"),
                finish(),
            ],
            units["title"]: [run("sleep 4"), write_action("units.py", fixed_units), finish()],
        },
    )
    repo = make_repo(tmp_path / "repo", files)
    with ScriptedServer(responder=team) as server:
        settings = settings_for(server, check="python3 -m unittest", workers=2)
        engine = Engine.create(settings, repo, "Fix units", db_path=tmp_path / "f.db")
        outcome = await engine.run()
    assert outcome.status in ("done", "stopped"), outcome.reason
    wrote = next(r["observation"] for r in actions(tmp_path / "f.db") if r["arguments"].find("units.py") > 0
                 and r["name"] == "write_file")  # fmt: skip
    assert "PASSED" in wrote and "landed meanwhile: helper.py" in wrote
    assert git(repo, "show", f"{engine.git.branch}:units.py") + "\n" == fixed_units
