"""A parked worktree reset in-process over many landings ends exactly at the tip: same bytes, modes and links,
nothing left over, a clean status, and no spurious change for the next commit (checkout runs without filters)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from formicary.agents.git.workspace import SessionRepo
from tests.gitrepo import git, make_repo


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def land(repo: Path, branch: str, change: dict[str, str | None], message: str) -> str:
    """Commit ``change`` (path -> text, None: delete, "->target": a symlink) on ``branch`` behind the session's
    back, in a scratch worktree, as another landing would; returns the new tip."""
    scratch = repo.parent / "scratch"
    if not scratch.exists():
        git(repo, "worktree", "add", "-q", "--detach", str(scratch), branch)
    git(scratch, "checkout", "-q", "--detach", branch)
    for rel, text in change.items():
        target = scratch / rel
        if text is None:
            git(scratch, "rm", "-q", "-r", rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink() or target.exists():
            target.unlink()
        if text.startswith("->"):
            target.symlink_to(text[2:])
        else:
            target.write_text(text)
            if rel.endswith(".sh"):
                target.chmod(0o755)
        git(scratch, "add", rel)
    git(scratch, "commit", "-q", "-m", message)
    tip = git(scratch, "rev-parse", "HEAD")
    git(repo, "update-ref", f"refs/heads/{branch}", tip)
    return tip


def tree_of(repo: Path, commit: str) -> dict[str, tuple[str, bytes]]:
    """Every path of ``commit``: (mode, bytes; a link's target)."""
    out: dict[str, tuple[str, bytes]] = {}
    for line in git(repo, "ls-tree", "-r", "--full-tree", commit).splitlines():
        meta, path = line.split("\t", 1)
        mode, _, sha = meta.split()
        raw = subprocess.run(
            ["git", "-C", str(repo), "cat-file", "blob", sha], capture_output=True, check=True
        )
        out[path] = (mode, raw.stdout)
    return out


def disk_of(top: Path) -> dict[str, tuple[str, bytes]]:
    """Every file and link under ``top`` (its own ``.git`` left out) as :func:`tree_of` describes them."""
    out: dict[str, tuple[str, bytes]] = {}
    for folder, dirs, files in os.walk(top):
        rel_dir = os.path.relpath(folder, top)
        if rel_dir == ".":
            dirs[:] = [d for d in dirs if d != ".git"]
            files = [f for f in files if f != ".git"]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            full = os.path.join(folder, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if os.path.islink(full):
                out[rel] = ("120000", os.readlink(full).encode())
            else:
                mode = "100755" if os.stat(full).st_mode & stat.S_IXUSR else "100644"
                out[rel] = (mode, Path(full).read_bytes())
    return out


@pytest.mark.anyio
async def test_a_worktree_reset_over_many_landings_is_byte_identical_to_the_tip(tmp_path: Path) -> None:
    repo = make_repo(
        tmp_path / "repo", {"README.md": "hi\n", ".gitattributes": "*.txt eol=crlf\n"}, n_files=40
    )
    session = await SessionRepo.open(repo, "s1", worktrees_dir=tmp_path / "wt", reuse_worktrees=True)
    async with session.worktree("t1", "w") as first:
        (first.path / "src" / "d01" / "file001.txt").write_text("the first task's edit\n")
        await session.commit(first, "edit")
        assert (await session.integrate(first)).status == "integrated"
    branch = f"refs/heads/{session.branch}"
    tip = session.shared.tip
    landings: list[dict[str, str | None]] = [
        {f"src/d{n % 10:02}/file{n:03}.txt": f"landing {n}\n" * 3 for n in range(0, 40, 3)},
        {"src/d02": None, "README.md": None},  # a whole folder and a top-level file deleted
        {"new/deep/er/one.txt": "one\n", "run.sh": "#!/bin/sh\necho hi\n", "link": "->new/deep"},
        {"src/d05/file005.txt": "crlf\r\nstored as is\r\n", "new/deep/er/one.txt": None},
        {"src/d02/back.txt": "a folder comes back\n", "link": "->src"},
    ]
    for n, change in enumerate(landings):
        tip = land(repo, session.branch, change, f"landing {n}")
    session.shared.tip, session.shared.tip_tree = tip, git(repo, "rev-parse", f"{tip}^{{tree}}")
    async with session.worktree("t2", "w") as second:
        assert second.path == first.path and second.base == tip
        assert disk_of(second.path) == tree_of(repo, tip)
        assert git(second.path, "status", "--porcelain=v1", "--untracked-files=all", "--ignored") == ""
        assert await session.commit(second, "nothing changed") is None  # no line ending rewritten
    assert git(repo, "rev-parse", branch) == tip
    await session.close()


@pytest.mark.anyio
async def test_a_reset_removes_a_symlink_an_agent_left_before_writing_under_its_path(tmp_path: Path) -> None:
    """A folder replaced by a link to outside, and a landing that changes a file under that folder: the new
    file is written in the worktree, the folder outside keeps what it had."""
    repo = make_repo(tmp_path / "repo", {"README.md": "hi\n"}, n_files=20)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "file003.txt").write_text("outside, untouched\n")
    session = await SessionRepo.open(repo, "s1", worktrees_dir=tmp_path / "wt", reuse_worktrees=True)
    async with session.worktree("t1", "w") as first:
        git(first.path, "rm", "-q", "-r", "--cached", "src/d03")
        os.rename(first.path / "src" / "d03", tmp_path / "moved")
        (first.path / "src" / "d03").symlink_to(outside)
    tip = land(repo, session.branch, {"src/d03/file003.txt": "landed\n"}, "landing")
    session.shared.tip, session.shared.tip_tree = tip, git(repo, "rev-parse", f"{tip}^{{tree}}")
    async with session.worktree("t2", "w") as second:
        assert not (second.path / "src" / "d03").is_symlink()
        assert (second.path / "src" / "d03" / "file003.txt").read_text() == "landed\n"
        assert disk_of(second.path) == tree_of(repo, tip)
    assert (outside / "file003.txt").read_text() == "outside, untouched\n"
    assert sorted(p.name for p in outside.iterdir()) == ["file003.txt"]
    await session.close()
