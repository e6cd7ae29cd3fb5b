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

**Lazy resets.** A parked worktree's reset to the new tip need not write the files that changed since its last
task (at 1,024 workers ~1,000 files, landed by others, most of which the next task never opens): they are left
*pending* and written on first use. A tool that opens a path settles it first (:func:`settle`, from
``confine.resolve``); anything that looks at names (a listing, a search, the test files) settles what may be
added or removed (:func:`settle_names`) or everything (:func:`settle_all`); and before any process runs in the
worktree, everything is written (:func:`ran`), so a process, a scan or a check never sees an older file. A
pending worktree is always a known one: whatever makes a worktree unknown settles it first.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection

Writer = Callable[[list[str]], None]
"""Writes the given pending paths as HEAD's tree holds them (set by the git layer, which knows the tree)."""


class Changes:
    """One followed worktree: the paths the tools wrote or removed, and whether that is all that changed."""

    __slots__ = ("_lock", "_write", "known", "paths", "pending", "pending_folders", "root", "structural")

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths: set[str] = set()
        """Worktree-relative paths (``/``-separated, symlinks resolved) written or removed since the last full
        checkout or reset; every other path holds what HEAD's tree holds (a superset: a path may match again)."""
        self.known = True
        """False once a process ran in the worktree: only a full scan can say what changed."""
        self.pending: set[str] = set()
        """Paths a lazy reset left for later: their files may still hold an older tree's (or be missing)."""
        self.structural: set[str] = set()
        """The pending paths that may be missing, or there though HEAD's tree has none (not only changed)."""
        self.pending_folders: set[str] = set()
        """Every folder above a pending path, to find the pending paths below a folder."""
        self._write: Writer | None = None
        self._lock = threading.Lock()

    def reset(self) -> None:
        """The worktree holds its HEAD's tree exactly again (a reset just wrote it)."""
        self.paths.clear()

    def defer(
        self, last: Changes | None, paths: Collection[str], structural: Collection[str], write: Writer
    ) -> None:
        """Leave ``paths`` for later, with what the ``last`` follower of this worktree still had pending (its
        sets are taken over, not copied: it is done with); ``write(paths)`` puts HEAD's version in place."""
        with self._lock:
            if last is not None:
                self.pending, self.structural, self.pending_folders = (
                    last.pending,
                    last.structural,
                    last.pending_folders,
                )
            self.pending.update(paths)
            self.structural.update(structural)
            self.pending_folders.update(f for p in paths for f in _folders(p))
            self._write = write

    def settle(self, rel: str) -> None:
        """Write the pending paths at, above or below ``rel`` (a clean relative path; "" is the whole tree)."""
        if not self.pending:
            return
        with self._lock:
            if not rel:
                due = list(self.pending)
            else:
                due = [f for f in (*_folders(rel), rel) if f in self.pending]
                if rel in self.pending_folders:
                    due += [p for p in self.pending if p.startswith(rel + "/")]
            self._settle(due)

    def settle_names(self) -> None:
        """Write the pending paths that may be missing or extra, so a listing sees HEAD's names."""
        if not self.structural:
            return
        with self._lock:
            self._settle([p for p in self.structural if p in self.pending])

    def _settle(self, due: list[str]) -> None:
        if not due or self._write is None:
            return
        self._write(due)  # raises with nothing forgotten: the paths stay pending
        self.pending.difference_update(due)
        self.structural.difference_update(due)
        if not self.pending:
            self.structural.clear()
            self.pending_folders.clear()


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


def _folders(rel: str) -> list[str]:
    """The folders above a relative path: ``a/b/c`` → ``a``, ``a/b``."""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def settle(root: str, rel: str) -> None:
    """Before a tool opens ``rel`` in the worktree at ``root`` (a real path): write it if a reset left it."""
    changes = _followed.get(root)
    if changes is not None and changes.pending:
        changes.settle(rel)


def settle_names(root: str) -> None:
    """Before the names under ``root`` are listed: write the pending paths that add or remove one."""
    changes = _followed.get(root)
    if changes is not None and changes.structural:
        changes.settle_names()


def settle_all(root: str) -> None:
    """Before anything reads the worktree at ``root`` as a whole (a search): write every pending path."""
    changes = _followed.get(root)
    if changes is not None and changes.pending:
        changes.settle("")


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
    Otherwise (no sandbox) it can write anywhere, so every followed worktree becomes unknown. Blocking: what a
    lazy reset left pending there is written first (the process must see HEAD's files, and a worktree that is
    not known is scanned, which must not take an older file for a change).
    """
    if not _followed:
        return
    if confined:
        changes = _owner(os.path.realpath(folder))
        if changes is not None:
            changes.settle("")
            changes.known = False
        return
    with _lock:
        every = list(_followed.values())
    for changes in every:
        changes.settle("")
        changes.known = False
