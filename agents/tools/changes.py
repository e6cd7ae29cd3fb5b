"""What formicary's own tools changed in a worktree, so that its commit and its reset need not scan it.

Why: at 1,024 workers ~51 tasks commit and ~51 parked worktrees are reset every second. A scan of a work tree
(a stat per file, a walk for untracked files, nested ``.git`` folders and symlinks) costs milliseconds on a
2,000-file repository, however small the change. While nothing but the tools' file actions changed a worktree
since it last held its HEAD's tree exactly, the paths they wrote or removed are all that can differ from it.

Anything that executes there may change anything: a ``run`` action, a check, the landing gate's check,
formicary's own git processes. :func:`ran` is called before each starts (by the sandbox's ``run_command`` and by
git's process runner), and the worktree stays "unknown" until a full reset makes it clean again. A command
run without a sandbox may write in any worktree, so it makes every followed worktree unknown.

Only worktrees that are followed (:func:`follow`, by the session's workspace, right after a full checkout)
are tracked; a write anywhere else is not recorded, and a worktree nobody follows is always scanned.
"""

from __future__ import annotations

import os
import threading


class Changes:
    """One followed worktree: the paths the tools wrote or removed, and whether that is all that changed."""

    __slots__ = ("known", "paths", "root")

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths: set[str] = set()
        """Worktree-relative paths (``/``-separated, symlinks resolved) written or removed since the last full
        checkout or reset; every other path holds what HEAD's tree holds (a superset: a path may match again)."""
        self.known = True
        """False once a process ran in the worktree: only a full scan can say what changed."""

    def reset(self) -> None:
        """The worktree holds its HEAD's tree exactly again (a reset just wrote it)."""
        self.paths.clear()


_followed: dict[str, Changes] = {}
_lock = threading.Lock()


def follow(root: str | os.PathLike[str], real: str | None = None) -> Changes:
    """Start following the worktree at ``root``, which holds its HEAD's tree exactly right now. ``real``: its
    real path when known already (a parked worktree's: ``realpath`` walks every folder from ``/``)."""
    real = real or os.path.realpath(root)
    changes = Changes(real)
    with _lock:
        _followed[real] = changes
    return changes


def unfollow(changes: Changes) -> None:
    """Stop following (the worktree is removed, or will be reset in full)."""
    changes.known = False
    with _lock:
        if _followed.get(changes.root) is changes:
            del _followed[changes.root]


def wrote(root: str, real: str) -> None:
    """A tool wrote or removed ``real`` (symlink-free, inside the worktree ``root``, itself a real path)."""
    changes = _followed.get(root)
    if changes is not None and real.startswith(root + os.sep):
        changes.paths.add(real[len(root) + 1 :].replace(os.sep, "/"))


def _owner(folder: str) -> Changes | None:
    """The followed worktree that ``folder`` is, or is inside; None if none."""
    path = folder
    while True:
        changes = _followed.get(path)
        if changes is not None:
            return changes
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def ran(folder: str | os.PathLike[str], *, confined: bool) -> None:
    """A process is about to run in ``folder``: what it changes there is unknown from now on.

    ``confined``: it can write only below ``folder`` (a sandboxed command; formicary's own git in a worktree).
    Otherwise (no sandbox) it can write anywhere, so every followed worktree becomes unknown.
    """
    if not _followed:
        return
    if confined:
        changes = _owner(os.path.realpath(folder))
        if changes is not None:
            changes.known = False
        return
    with _lock:
        for changes in _followed.values():
            changes.known = False
