"""The session workspace on real temporary repositories: refusals, worktree lifecycle, pruning, commits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from formicary.agents.git.run import GitError
from formicary.agents.git.workspace import SessionRepo, WorkspaceError
from tests.gitrepo import git, make_repo


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", files={"a.txt": "alpha\n", "b.txt": "beta\n"})


def operator_state(repo: Path) -> tuple[str, ...]:
    """Everything of the operator's we promise not to touch."""
    index = repo / ".git" / "index"
    return (
        git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "-q", "HEAD"),
        hashlib.sha256(index.read_bytes()).hexdigest() if index.exists() else "",
        git(repo, "for-each-ref", "--format=%(refname) %(objectname)"),
        (repo / ".git" / "config").read_text(),
    )


async def open_session(repo: Path, tmp_path: Path, sid: str = "s1", **kw: object) -> SessionRepo:
    return await SessionRepo.open(repo, sid, worktrees_dir=tmp_path / "wt" / sid, **kw)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("change", ["modified", "staged", "untracked"])
async def test_dirty_repo_is_refused_and_untouched(repo: Path, tmp_path: Path, change: str) -> None:
    if change == "modified":
        (repo / "a.txt").write_text("changed\n")
    elif change == "staged":
        (repo / "b.txt").write_text("staged\n")
        git(repo, "add", "b.txt")
    else:
        (repo / "new file.txt").write_text("new\n")
    before = operator_state(repo)
    with pytest.raises(WorkspaceError) as err:
        await open_session(repo, tmp_path)
    message = str(err.value)
    assert "uncommitted changes" in message and "\n" not in message
    assert operator_state(repo) == before
    assert not (tmp_path / "wt").exists()


@pytest.mark.anyio
async def test_unusable_targets_are_refused(tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    empty = tmp_path / "empty"
    git(tmp_path, "init", "-q", str(empty))
    detached = make_repo(tmp_path / "detached")
    git(detached, "checkout", "-q", "--detach")
    plain = tmp_path / "plain"
    plain.mkdir()
    cases = {
        bare: "bare repository",
        empty: "no commits",
        detached: "detached HEAD",
        plain: "not a git repository",
        tmp_path / "missing": "does not exist",
    }
    for path, words in cases.items():
        with pytest.raises(WorkspaceError) as err:
            await open_session(path, tmp_path)
        assert words in str(err.value) and "\n" not in str(err.value), path


@pytest.mark.anyio
async def test_session_branch_new_then_resume(repo: Path, tmp_path: Path) -> None:
    before = operator_state(repo)
    session = await open_session(repo, tmp_path)
    head = git(repo, "rev-parse", "HEAD")
    assert session.branch == "formicary/s1" and session.base_sha == head == session.shared.tip
    assert git(repo, "rev-parse", "refs/heads/formicary/s1") == head
    assert operator_state(repo)[:4] == before[:4]
    with pytest.raises(WorkspaceError, match="already exists"):
        await open_session(repo, tmp_path)
    again = await open_session(repo, tmp_path, resume=True)
    assert again.shared.tip == head
    with pytest.raises(WorkspaceError, match="does not exist"):
        await open_session(repo, tmp_path, sid="s2", resume=True)
    git(repo, "checkout", "-q", "formicary/s1")
    with pytest.raises(WorkspaceError, match="checked out"):
        await open_session(repo, tmp_path, resume=True)
    named = await open_session(repo, tmp_path, sid="s3", branch="feature/agents")
    assert named.branch == "feature/agents"


@pytest.mark.anyio
async def test_worktree_removed_after_success_failure_and_cancellation(repo: Path, tmp_path: Path) -> None:
    session = await open_session(repo, tmp_path)

    async with session.worktree("ok", "w1") as wt:
        assert (wt.path / "a.txt").read_text() == "alpha\n"
        assert not wt.path.is_relative_to(repo)
        (wt.path / "c.txt").write_text("gamma\n")
        assert await session.commit(wt, "add c")
        assert (await session.integrate(wt)).status == "integrated"
    assert not wt.path.exists()
    await session.delete_landed_branches()
    assert git(repo, "branch", "--list", wt.branch) == ""  # integrated: the task branch may go

    with pytest.raises(RuntimeError):
        async with session.worktree("boom", "w2") as failed:
            (failed.path / "d.txt").write_text("delta\n")
            await session.commit(failed, "add d")
            raise RuntimeError("worker crashed")
    assert not failed.path.exists()
    assert git(repo, "show", f"{failed.branch}:d.txt") == "delta"  # the work is kept

    with anyio.CancelScope() as scope:
        async with session.worktree("cancel", "w3") as cancelled:
            scope.cancel()
            await anyio.sleep(1)
    assert scope.cancelled_caught
    assert not cancelled.path.exists()
    await session.close()
    assert git(repo, "branch", "--list", cancelled.branch) == ""  # nothing committed: nothing to keep
    assert git(repo, "branch", "--list", failed.branch) != ""

    listed = git(repo, "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 1


@pytest.mark.anyio
async def test_stale_worktrees_pruned_on_start(repo: Path, tmp_path: Path) -> None:
    root = tmp_path / "wt"
    dead = await SessionRepo.open(repo, "dead", worktrees_dir=root / "dead")
    live = await SessionRepo.open(repo, "live", worktrees_dir=root / "live")
    async with dead.worktree("t1", "w") as dead_wt, live.worktree("t2", "w") as live_wt:
        # A crash: the process dies with both worktrees on disk; one's metadata is lost too.
        orphan = root / "dead" / "orphan"
        orphan.mkdir()
        (orphan / ".git").write_text(f"gitdir: {repo / '.git' / 'worktrees' / 'gone'}\n")
        foreign = root / "dead" / "foreign"
        foreign.mkdir()
        (foreign / ".git").write_text(f"gitdir: {tmp_path / 'other' / '.git' / 'worktrees' / 'x'}\n")

        starting = await SessionRepo.open(repo, "new", worktrees_dir=root / "new")
        removed = await starting.prune_stale(live_sessions={"live"})

        assert not dead_wt.path.exists() and not orphan.exists()
        assert foreign.exists()  # another repository's folder is not ours to delete
        assert live_wt.path.exists()
        assert set(removed) >= {dead_wt.path, orphan}
        listed = git(repo, "worktree", "list", "--porcelain")
        assert str(live_wt.path) in listed and str(dead_wt.path) not in listed


@pytest.mark.anyio
async def test_commit_as_worker_and_nothing_to_commit(repo: Path, tmp_path: Path) -> None:
    before = operator_state(repo)
    session = await open_session(repo, tmp_path)
    async with session.worktree("t1", "agent7") as wt:
        assert await session.commit(wt, "nothing") is None
        (wt.path / "a.txt").unlink()
        (wt.path / "new.txt").write_text("n\n")
        sha = await session.commit(wt, "Task t1: replace a")
        assert sha and wt.head == sha
        who = git(wt.path, "log", "-1", "--format=%an|%ae|%cn|%ce|%B")
        assert who.startswith("formicary-worker-agent7|agent7@formicary.local|formicary-worker-agent7|")
        assert "Formicary-Task: t1" in who
        assert git(wt.path, "status", "--porcelain") == ""
    state = operator_state(repo)
    assert state[:4] == before[:4] and state[5] == before[5]  # HEAD, index, work tree, config


@pytest.mark.anyio
async def test_bad_ids_are_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitError):
        await open_session(repo, tmp_path, sid="../evil")
    session = await open_session(repo, tmp_path)
    with pytest.raises(GitError):
        async with session.worktree("a b", "w"):
            pass


@pytest.mark.anyio
async def test_reused_worktrees_are_clean_and_closed(repo: Path, tmp_path: Path) -> None:
    session = await open_session(repo, tmp_path, reuse_worktrees=True)
    async with session.worktree("t1", "w") as first:
        (first.path / "new.txt").write_text("new\n")
        await session.commit(first, "add new")
        assert (await session.integrate(first)).status == "integrated"
        (first.path / "leftover.tmp").write_text("junk\n")
        (first.path / "a.txt").write_text("uncommitted\n")
    assert first.path.exists()  # parked
    async with session.worktree("t2", "w") as second:
        assert second.path == first.path and second.base == session.shared.tip
        assert (second.path / "new.txt").read_text() == "new\n"
        assert not (second.path / "leftover.tmp").exists()
        assert (second.path / "a.txt").read_text() == "alpha\n"
        assert git(second.path, "symbolic-ref", "HEAD") == f"refs/heads/{second.branch}"
    await session.close()
    assert not first.path.exists()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(repo, "branch", "--list", "formicary-tasks/*") == ""  # both landed or empty: deleted


@pytest.mark.anyio
async def test_a_reused_worktree_drops_staged_ignored_and_unlanded_work(repo: Path, tmp_path: Path) -> None:
    """The next task starts from the tip alone, whatever the last one left in its index or work tree."""
    session = await open_session(repo, tmp_path, reuse_worktrees=True)
    async with session.worktree("t1", "w") as first:
        (first.path / ".gitignore").write_text("*.log\n")
        (first.path / "kept.txt").write_text("landed\n")
        await session.commit(first, "ignore logs")
        assert (await session.integrate(first)).status == "integrated"
        (first.path / "staged.txt").write_text("staged\n")
        (first.path / "b.txt").write_text("staged change\n")
        (first.path / "sub2").mkdir()
        (first.path / "sub2" / "gone.txt").write_text("staged, then deleted\n")
        git(first.path, "add", "staged.txt", "b.txt", "sub2/gone.txt")
        git(first.path, "rm", "-q", "kept.txt")
        (first.path / "sub2" / "gone.txt").unlink()
        (first.path / "debug.log").write_text("ignored\n")
        (first.path / "sub").mkdir()
        (first.path / "sub" / "deep.txt").write_text("untracked\n")
    async with session.worktree("t2", "w") as second:
        (second.path / "a.txt").write_text("unlanded\n")
        await session.commit(second, "never lands")  # the task fails: its branch keeps the commit
        second.status = "failed"
    async with session.worktree("t3", "w") as third:
        assert third.path == first.path
        names = sorted(p.name for p in third.path.iterdir())
        assert names == [".git", ".gitignore", "a.txt", "b.txt", "kept.txt"]
        assert (third.path / "a.txt").read_text() == "alpha\n"
        assert (third.path / "b.txt").read_text() == "beta\n"
        assert git(third.path, "status", "--porcelain=v1", "--untracked-files=all", "--ignored") == ""
        assert git(third.path, "rev-parse", "HEAD") == session.shared.tip
    await session.close()


@pytest.mark.anyio
async def test_a_worktree_half_made_when_the_process_was_killed_is_pruned(repo: Path, tmp_path: Path) -> None:
    """Worktrees are made in-process (linked.py): a kill -9 after the folder's mkdir leaves it empty, and one
    after the metadata's "initializing" lock leaves metadata git's prune will not touch."""
    root = tmp_path / "wt"
    (root / "dead" / "slot-7").mkdir(parents=True)  # killed right after mkdir
    half = root / "dead" / "slot-8"
    half.mkdir()
    meta = repo / ".git" / "worktrees" / "slot-8"
    meta.mkdir(parents=True)
    (meta / "locked").write_text("initializing\n")
    (meta / "gitdir").write_text(f"{half / '.git'}\n")  # killed before the folder's .git file was written
    live_half = root / "live" / "slot-1"
    live_half.mkdir(parents=True)
    live_meta = repo / ".git" / "worktrees" / "slot-1"
    live_meta.mkdir()
    (live_meta / "locked").write_text("initializing\n")
    (live_meta / "gitdir").write_text(f"{live_half / '.git'}\n")  # a live session's, being made right now

    starting = await SessionRepo.open(repo, "new", worktrees_dir=root / "new")
    await starting.prune_stale(live_sessions={"live"})
    assert not (root / "dead" / "slot-7").exists() and not half.exists() and not meta.exists()
    assert live_half.exists() and live_meta.exists()
