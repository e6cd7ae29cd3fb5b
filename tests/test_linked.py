"""A worktree made in-process (agents/git/linked.py) is one git itself lists, uses, prunes and removes."""

from __future__ import annotations

from pathlib import Path

from formicary.agents.git import checkout, linked
from tests.gitrepo import git, make_repo


def test_git_sees_an_ordinary_linked_worktree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "alpha\n"})
    base = git(repo, "rev-parse", "HEAD")
    common = repo / ".git"
    path = tmp_path / "wts" / "slot-1"
    path.parent.mkdir()
    git_dir = linked.add_worktree(common, path, "tasks/t1", base)
    assert git_dir == common / "worktrees" / "slot-1"
    checkout.populate(git_dir, path)
    assert (path / "a.txt").read_text() == "alpha\n"
    listing = git(repo, "worktree", "list", "--porcelain")
    assert f"worktree {path}\nHEAD {base}\nbranch refs/heads/tasks/t1" in listing
    assert git(path, "status", "--porcelain") == ""
    (path / "b.txt").write_text("beta\n")
    git(path, "add", "b.txt")
    git(path, "-c", "user.name=w", "-c", "user.email=w@x", "commit", "-q", "-m", "b")
    assert git(repo, "log", "-1", "--format=%s", "tasks/t1") == "b"
    # a taken branch or folder makes nothing
    assert linked.add_worktree(common, tmp_path / "wts" / "slot-2", "tasks/t1", base) is None
    assert not (tmp_path / "wts" / "slot-2").exists()
    assert linked.add_worktree(common, path, "tasks/t2", base) is None
    assert git(repo, "branch", "--list", "tasks/t2") == ""
    # the same folder name elsewhere gets git's numbered metadata folder
    other = tmp_path / "elsewhere" / "slot-1"
    other.parent.mkdir()
    assert linked.add_worktree(common, other, "tasks/t3", base) == common / "worktrees" / "slot-11"
    assert git(other, "rev-parse", "--abbrev-ref", "HEAD") == "tasks/t3"
    git(repo, "worktree", "remove", "--force", str(path))
    assert not path.exists() and not git_dir.exists()
    git(repo, "worktree", "prune")
    assert (common / "worktrees" / "slot-11").exists()  # its folder is there: prune keeps it
