"""The checks before a session opens a repository: a new session needs a clean, attached, non-empty one; a
resumed one needs its branch to exist and be checked out nowhere. Each refusal is one line for the operator."""

from __future__ import annotations

from pathlib import Path

from .run import GitError, git


class WorkspaceError(GitError):
    """The target repository can't host a session; the message is one line for the operator."""


async def new_session_checks(root: Path) -> str:
    """Refuse anything but a clean, attached, non-empty repository; return the HEAD commit."""
    st = await git("status", "--porcelain=v2", "--branch", "-z", "--untracked-files=normal", cwd=root)
    oid = head = None
    dirty: list[str] = []
    records = iter(st.out.split("\0"))
    for rec in records:
        kind = rec[:2]
        if rec.startswith("# branch.oid "):
            oid = rec[len("# branch.oid ") :]
        elif rec.startswith("# branch.head "):
            head = rec[len("# branch.head ") :]
        elif kind in ("1 ", "2 ", "u "):
            fields = {"1 ": 8, "2 ": 9, "u ": 10}[kind]
            dirty.append(rec.split(" ", fields)[-1])
            if kind == "2 ":
                next(records, None)  # a rename's original path
        elif kind == "? ":
            dirty.append(rec[2:])
    if oid in (None, "(initial)"):
        raise WorkspaceError(f"{root} has no commits yet; commit something first")
    if head == "(detached)":
        raise WorkspaceError(f"{root} has a detached HEAD; check out a branch first")
    if dirty:
        shown = ", ".join(dirty[:3]) + (", …" if len(dirty) > 3 else "")
        raise WorkspaceError(
            f"{root} has uncommitted changes ({len(dirty)} path(s): {shown}); commit or stash them first"
        )
    assert oid is not None
    return oid


async def resume_checks(root: Path, branch: str) -> tuple[str, str]:
    ref = f"refs/heads/{branch}"
    res = await git("rev-parse", "--verify", "-q", ref, cwd=root, check=False)
    if res.rc != 0:
        raise WorkspaceError(f"cannot resume: branch {branch} does not exist")
    listing = await git("worktree", "list", "--porcelain", cwd=root)
    for block in listing.out.split("\n\n"):
        if f"\nbranch {ref}" in f"\n{block}":
            where = block.splitlines()[0].removeprefix("worktree ")
            raise WorkspaceError(
                f"branch {branch} is checked out in {where}; switch that work tree away first"
            )
    tip = res.out.strip()
    tree = (await git("rev-parse", f"{tip}^{{tree}}", cwd=root)).out.strip()
    return tip, tree
