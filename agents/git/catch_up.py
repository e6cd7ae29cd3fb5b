"""A worker's copy brought up to what landed since its task began, before its tests run again.

Why: a worker's tests run in its own worktree, made from the shared branch's tip when the task began. Measured
(bench/effectiveness.py, webcolors): ``hex_to_rgb`` called a helper that another task was restoring at the same
time; that task landed a minute later, but the ``hex_to_rgb`` worker's tests kept failing on the old stub in its
copy for the rest of the run, and the model went on to edit the other task's file. So before the check after an
edit, when the tip has moved, the worktree's task branch is fast-forwarded to it (``git merge --ff-only``):
others' files come in, the worker's edits stay.

Only when that cannot touch the worker's work: not after its first commit (a conflict or gate round), and not
when a landed change touches a file the worker has edited (its edits, and the originals it would restore on
starting over, stay as they are; the landing's merge settles such overlaps, with the worker resolving any
conflict). git itself refuses to overwrite any other local change (a ``run``'s output, an untracked file).
"""

from __future__ import annotations

from collections.abc import Collection

from .run import git
from .worktree import Worktree


async def catch_up(wt: Worktree, tip: str, edited: Collection[str]) -> list[str]:
    """Fast-forward ``wt`` to ``tip`` unless a path that changed since its base is in ``edited`` (worktree-
        relative); the paths that came in ([] when nothing was done). Only before ``wt``'s first commit (the
    caller, :meth:`SessionRepo.catch_up`, checks that and that the tip moved)."""
    listed = await git(
        "diff-tree", "-r", "-z", "--name-only", "--no-renames", wt.base, tip,
        cwd=wt.path, git_dir=wt.git_dir, check=False, background=True,
    )  # fmt: skip
    if listed.rc != 0:
        return []
    landed = [p for p in listed.out.split("\0") if p]
    mine = set(edited)
    if not landed or any(p in mine for p in landed):
        return []
    merged = await git(
        "merge", "--ff-only", "--no-stat", "--quiet", tip,
        cwd=wt.path, git_dir=wt.git_dir, check=False, background=True,
    )  # fmt: skip
    if merged.rc != 0:
        return []
    wt.base = tip
    return landed
