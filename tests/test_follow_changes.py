"""A worktree followed by what the tools wrote (tools/changes.py): its commit takes exactly those paths and its
reset writes exactly the tree diff while nothing else ran there; anything that runs there (a command, a git
process) makes it scanned again, so what a process made is committed and what it left is cleaned."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from formicary.agents.git import checkout
from formicary.agents.git.run import git as formicary_git
from formicary.agents.git.workspace import SessionRepo
from formicary.agents.tools import changes
from formicary.agents.tools.actions import ActionContext, Run, WriteFile, execute
from formicary.agents.tools.sandbox import SandboxOptions
from tests.gitrepo import git, make_repo
from tests.test_reset import disk_of, land, tree_of


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def session_of(tmp_path: Path, **files: str) -> SessionRepo:
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n", **files}, n_files=30)
    return await SessionRepo.open(
        repo, "s1", worktrees_dir=tmp_path / "wt", reuse_worktrees=True, follow_changes=True
    )


def context(wt_path: Path) -> ActionContext:
    return ActionContext(root=wt_path, sandbox=SandboxOptions(mode="none"))


async def write(wt_path: Path, path: str, content: str) -> None:
    obs = await execute(WriteFile(name="write_file", path=path, content=content), context(wt_path))
    assert not obs.error, obs.text


def committed(repo: Path, sha: str) -> set[str]:
    return set(git(repo, "diff-tree", "-r", "--name-only", "--no-commit-id", f"{sha}^", sha).splitlines())


@pytest.mark.anyio
async def test_only_the_tools_paths_are_committed_while_nothing_ran(tmp_path: Path) -> None:
    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as wt:
        await write(wt.path, "src/d01/file001.txt", "edited by a tool\n")
        await write(wt.path, "new/folder/made.txt", "made by a tool\n")
        (wt.path / "planted.txt").write_text("behind the tools' back, no process\n")
        assert wt.followed is not None and wt.followed.known
        assert wt.followed.paths == {"src/d01/file001.txt", "new/folder/made.txt"}
        sha = await session.commit(wt, "tools only")
        assert sha is not None
        # the fast path: a scan would have committed planted.txt too
        assert committed(session.root, sha) == {"src/d01/file001.txt", "new/folder/made.txt"}
        assert git(session.root, "show", f"{sha}:new/folder/made.txt") == "made by a tool"
    await session.close()


@pytest.mark.anyio
async def test_a_file_a_command_made_is_committed(tmp_path: Path) -> None:
    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as wt:
        await write(wt.path, "src/d02/file002.txt", "edited by a tool\n")
        ran = await execute(
            Run(name="run", command="mkdir -p out && echo made > out/by_run.txt && rm src/d03/file003.txt"),
            context(wt.path),
        )
        assert ran.exit_code == 0, ran.text
        assert wt.followed is not None and not wt.followed.known
        sha = await session.commit(wt, "tools and a command")
        assert sha is not None
        assert committed(session.root, sha) == {
            "src/d02/file002.txt",
            "out/by_run.txt",
            "src/d03/file003.txt",
        }
    await session.close()


@pytest.mark.anyio
async def test_a_git_process_or_an_unsandboxed_command_makes_worktrees_unknown(tmp_path: Path) -> None:
    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as one, session.worktree("t2", "w") as two:
        assert one.followed is not None and two.followed is not None
        await formicary_git("status", "--porcelain", cwd=one.path, git_dir=one.git_dir)
        assert not one.followed.known and two.followed.known
        await formicary_git("status", "--porcelain", cwd=session.root)  # the repository itself: no worktree
        assert two.followed.known
        changes.ran(tmp_path / "elsewhere", confined=False)  # no sandbox: it could write anywhere
        assert not two.followed.known
    await session.close()


@pytest.mark.anyio
async def test_a_known_worktree_resets_by_the_tree_diff_to_the_tip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await session_of(tmp_path, **{"tool.sh": "#!/bin/sh\n", "link": "->src"})
    async with session.worktree("t1", "w") as first:
        await write(first.path, "src/d01/file001.txt", "the first task's edit\n")
        await session.commit(first, "edit")
        assert (await session.integrate(first)).status == "integrated"
        # written after the commit and abandoned: the reset must undo them too
        await write(first.path, "src/d04/file004.txt", "abandoned edit\n")
        await write(first.path, "scratch/deep/note.txt", "abandoned new file\n")
    landings: list[dict[str, str | None]] = [
        {f"src/d{n % 10:02}/file{n:03}.txt": f"landing {n}\n" for n in range(0, 30, 4)},
        {"src/d02": None, "README.md": None},
        {"new/deep/one.txt": "one\n", "run.sh": "#!/bin/sh\necho hi\n", "link": "->new/deep"},
        {"src/d05/file005.txt": "crlf\r\nas is\r\n", "new/deep/one.txt": None, "tool.sh": None},
        {"src/d02/back.txt": "a folder comes back\n", "src/d06/file006.txt": None, "README.md": "again\n"},
        {"scratch": "a file where the abandoned folder was\n"},
    ]
    tip = ""
    for n, change in enumerate(landings):
        tip = land(session.root, session.branch, change, f"landing {n}")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")

    def no_full_reset(*args: object) -> bool:
        raise AssertionError("a known worktree was reset in full")

    monkeypatch.setattr(checkout, "reset_worktree", no_full_reset)
    async with session.worktree("t2", "w") as second:
        assert second.path == first.path and second.base == tip
        # lazy: nothing written yet; what the tip changed is written on first use (here: all at once)
        assert second.followed is not None and "src/d04/file004.txt" in second.followed.pending
        assert (second.path / "src/d04/file004.txt").read_text() == "abandoned edit\n"
        assert disk_of(second.path) != tree_of(session.root, tip)
        changes.settle_all(second.followed.root)
        assert not second.followed.pending
        assert disk_of(second.path) == tree_of(session.root, tip)
        assert not (second.path / "new").exists()  # a folder whose last file went is gone, as with git
        assert git(second.path, "status", "--porcelain=v1", "--untracked-files=all", "--ignored") == ""
        assert second.followed is not None and second.followed.known and not second.followed.paths
        assert await session.commit(second, "nothing changed") is None
    assert (first.path / "link").is_symlink()
    tip = land(session.root, session.branch, {"link": "a file again\n", "src/d02": None}, "back")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")
    async with session.worktree("t3", "w") as third:  # a link becomes a file, a folder goes again
        assert third.followed is not None
        changes.settle_all(third.followed.root)
        assert disk_of(third.path) == tree_of(session.root, tip)
        assert git(third.path, "status", "--porcelain=v1", "--untracked-files=all", "--ignored") == ""
    await session.close()


@pytest.mark.anyio
async def test_a_worktree_where_something_ran_is_reset_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as first:
        ran = await execute(Run(name="run", command="echo left > leftover.txt"), context(first.path))
        assert ran.exit_code == 0
    calls: list[str] = []
    full = checkout.reset_worktree

    def counted(*args: object) -> bool:
        calls.append("full")
        return full(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(checkout, "reset_worktree", counted)
    async with session.worktree("t2", "w") as second:
        assert calls == ["full"]
        assert not (second.path / "leftover.txt").exists()
        assert second.followed is not None and second.followed.known  # clean again: followed anew
    await session.close()


@pytest.mark.anyio
async def test_a_known_reset_never_writes_through_a_symlink(tmp_path: Path) -> None:
    """A link where a folder was, made without a process (a test's hand): the tree diff refuses to write
    through it and the full reset removes it; the folder outside keeps what it had."""
    session = await session_of(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    async with session.worktree("t1", "w") as first:
        os.rename(first.path / "src" / "d03", tmp_path / "moved")
        (first.path / "src" / "d03").symlink_to(outside)
    tip = land(session.root, session.branch, {"src/d03/file003.txt": "landed\n"}, "landing")
    session.shared.tip, session.shared.tip_tree = tip, git(session.root, "rev-parse", f"{tip}^{{tree}}")
    async with session.worktree("t2", "w") as second:
        assert not (second.path / "src" / "d03").is_symlink()
        assert disk_of(second.path) == tree_of(session.root, tip)
    assert list(outside.iterdir()) == []
    await session.close()


def test_the_blob_cache_returns_each_blob_s_bytes_within_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pygit2

    repo = pygit2.init_repository(str(tmp_path / "r"), bare=True)
    monkeypatch.setattr(checkout, "_blobs", {})
    monkeypatch.setattr(checkout, "_blobs_bytes", 0)
    monkeypatch.setattr(checkout, "BLOB_CACHE_BYTES", 1000)
    blobs = {repo.create_blob(f"blob {n}\n".encode() * 20): f"blob {n}\n".encode() * 20 for n in range(30)}
    for _ in range(2):
        for oid, data in blobs.items():
            assert checkout._blob(repo.odb, oid) == data
    assert 0 < checkout._blobs_bytes <= 1000
    assert checkout._blobs_bytes == sum(len(d) for d in checkout._blobs.values())


@pytest.mark.anyio
async def test_a_worker_s_undo_is_recorded_like_its_writes(tmp_path: Path) -> None:
    from formicary.agents.roles.restart import Attempts

    session = await session_of(tmp_path)
    async with session.worktree("t1", "w") as wt:
        root = os.path.realpath(wt.path)
        attempts = Attempts()
        for path in ("src/d01/file001.txt", "made.txt"):
            attempts.before_edit(root, path)
            await write(wt.path, path, "a try that failed\n")
        await write(wt.path, "kept.txt", "kept\n")
        attempts.undo(root)  # file001 back as it was, made.txt gone
        assert not (wt.path / "made.txt").exists()
        sha = await session.commit(wt, "after an undo")
        assert sha is not None and committed(session.root, sha) == {"kept.txt"}
    await session.close()
