"""Lazy resets (tools/changes.py): a parked worktree's reset to the tip writes nothing; a file is written when a
tool first opens it, a listing first gets the names that came or went, and a process, a scan or a commit never
sees an older file. What a user would lose if it broke: a worker reading a stale file, a command testing an old
tree, or a commit that quietly reverts what others landed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from formicary.agents.git.run import git as formicary_git
from formicary.agents.tools import changes, confine, targeted
from formicary.agents.tools.actions import ListFiles, Run, execute
from tests.gitrepo import git
from tests.test_follow_changes import committed, context, session_of, write
from tests.test_reset import disk_of, land, tree_of


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def parked_behind_the_tip(tmp_path: Path):
    """A session whose one parked worktree is three landings behind the tip, and the tip."""
    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as first:
        await write(first.path, "src/d01/file001.txt", "the first task's edit\n")
        await session.commit(first, "edit")
        assert (await session.integrate(first)).status == "integrated"
    tip = ""
    for n, change in enumerate(
        [
            {"src/d02/file002.txt": "landed by another task\n"},
            {"tests/test_added.py": "def test_x():\n    pass\n", "src/d03/file003.txt": None},
            {"src/d04/file004.txt": "landed too\n"},
        ]
    ):
        tip = land(session.root, session.branch, change, f"landing {n}")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")
    return session, tip


@pytest.mark.anyio
async def test_a_tool_reads_the_tip_s_file_and_only_what_it_opens_is_written(tmp_path: Path) -> None:
    session, tip = await parked_behind_the_tip(tmp_path)
    async with session.worktree("t2", "w") as wt:
        assert wt.followed is not None and wt.base == tip
        root = wt.followed.root
        assert (wt.path / "src/d02/file002.txt").read_text() != "landed by another task\n"  # not written yet
        assert confine.read_text(root, "src/d02/file002.txt").endswith("landed by another task")
        assert (wt.path / "src/d02/file002.txt").read_text() == "landed by another task\n"
        assert "src/d04/file004.txt" in wt.followed.pending  # not opened: still left for later
        with pytest.raises(confine.ActionFailed):
            confine.read_text(root, "src/d03/file003.txt")  # removed on the tip: gone when opened
    await session.close()


@pytest.mark.anyio
async def test_a_listing_sees_the_tip_s_names_without_writing_every_change(tmp_path: Path) -> None:
    session, _ = await parked_behind_the_tip(tmp_path)
    async with session.worktree("t2", "w") as wt:
        assert wt.followed is not None
        root = wt.followed.root
        assert "tests/test_added.py" in targeted.test_files(root)
        assert not (wt.path / "src/d03/file003.txt").exists()
        assert "src/d04/file004.txt" in wt.followed.pending  # only changed in place: not needed for names
        listed = await execute(ListFiles(name="list_files", path="src/d04"), context(wt.path))
        assert "file004.txt" in listed.text and not wt.followed.pending  # sizes shown: everything written
    await session.close()


@pytest.mark.anyio
async def test_a_process_and_a_command_see_the_tip(tmp_path: Path) -> None:
    session, tip = await parked_behind_the_tip(tmp_path)
    async with session.worktree("t2", "w") as wt:
        assert wt.followed is not None and wt.followed.pending
        ran = await execute(Run(name="run", command="cat src/d04/file004.txt"), context(wt.path))
        assert ran.text.startswith("landed too\n"), ran.text
        assert not wt.followed.pending and disk_of(wt.path) == tree_of(session.root, tip)
    async with session.worktree("t3", "w") as wt:
        await formicary_git("status", "--porcelain", cwd=wt.path, git_dir=wt.git_dir)
        assert git(wt.path, "status", "--porcelain=v1", "--untracked-files=all") == ""
    await session.close()


@pytest.mark.anyio
async def test_a_commit_after_a_lazy_reset_takes_only_the_task_s_change(tmp_path: Path) -> None:
    session, tip = await parked_behind_the_tip(tmp_path)
    async with session.worktree("t2", "w") as wt:
        assert wt.followed is not None and wt.followed.pending
        await write(wt.path, "src/d05/file005.txt", "the second task's edit\n")
        sha = await session.commit(wt, "second")
        assert sha is not None and committed(session.root, sha) == {"src/d05/file005.txt"}
        assert (await session.integrate(wt)).status == "integrated"
    landed = session.shared.tip
    assert git(session.root, "show", f"{landed}:src/d02/file002.txt") == "landed by another task"
    assert git(session.root, "diff", "--name-only", tip, landed).split() == ["src/d05/file005.txt"]
    await session.close()


@pytest.mark.anyio
async def test_changes_left_for_later_add_up_over_several_resets(tmp_path: Path) -> None:
    """Two resets in a row with nothing opened between them: the second still writes what the first left."""
    session, _ = await parked_behind_the_tip(tmp_path)
    async with session.worktree("t2", "w"):
        pass
    tip = land(session.root, session.branch, {"src/d06/file006.txt": "later\n"}, "later")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")
    async with session.worktree("t3", "w") as wt:
        assert wt.followed is not None
        assert {"src/d02/file002.txt", "src/d06/file006.txt"} <= wt.followed.pending
        changes.settle_all(wt.followed.root)
        assert disk_of(wt.path) == tree_of(session.root, tip)
    await session.close()


@pytest.mark.anyio
async def test_a_full_reset_over_files_left_for_later_writes_them_too(tmp_path: Path) -> None:
    """A folder turned into a link by hand (no tool, no process) makes the next reset a full one: what the
    lazy resets before it left unwritten is written by it, and nothing goes through the link."""
    session, _ = await parked_behind_the_tip(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    async with session.worktree("t2", "w") as wt:
        assert wt.followed is not None and "src/d04/file004.txt" in wt.followed.pending
        os.rename(wt.path / "src" / "d07", tmp_path / "moved")
        (wt.path / "src" / "d07").symlink_to(outside)
    tip = land(session.root, session.branch, {"src/d07/file007.txt": "landed\n"}, "through the link?")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")
    async with session.worktree("t3", "w") as wt:
        assert wt.followed is not None and not wt.followed.pending
        assert not (wt.path / "src" / "d07").is_symlink()
        assert disk_of(wt.path) == tree_of(session.root, tip)
    assert list(outside.iterdir()) == []
    await session.close()


@pytest.mark.anyio
async def test_a_read_through_a_tracked_link_gets_the_tip_s_file(tmp_path: Path) -> None:
    """The file a link leads to is written before it is read, though its own path was never named."""
    session = await session_of(tmp_path)
    tip = land(session.root, session.branch, {"link": "->src/d02"}, "a link")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")
    async with session.worktree("t1", "w") as first:
        assert (first.path / "link").is_symlink()
    tip = land(session.root, session.branch, {"src/d02/file002.txt": "landed behind the link\n"}, "landing")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")
    async with session.worktree("t2", "w") as wt:
        assert wt.followed is not None and "src/d02/file002.txt" in wt.followed.pending
        shown = confine.read_text(wt.followed.root, "link/file002.txt")
        assert shown.endswith("landed behind the link"), shown
    await session.close()


@pytest.mark.anyio
async def test_past_the_pending_bound_a_reset_writes_them_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from formicary.agents.git import workspace

    monkeypatch.setattr(workspace, "LAZY_MAX", 2)
    session, tip = await parked_behind_the_tip(tmp_path)
    async with session.worktree("t2", "w") as wt:
        assert wt.followed is not None and not wt.followed.pending
        assert disk_of(wt.path) == tree_of(session.root, tip)
    await session.close()
