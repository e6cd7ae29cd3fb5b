"""Checking a worktree out in-process (libgit2): a new worktree's first checkout and a parked one's reset to
a new task's base, each the equivalent of ``checkout -f`` + ``clean -ffdx``.

Why in-process: a parked worktree reset by git processes cost a process per task and rewrote more than what
changed; here only the files that differ are written, and the index's stats let unchanged files be skipped.
Trust (rule 7): libgit2's checkout writes through a directory an agent replaced with a symlink (git does not),
so every symlink the target tree does not hold as the same link is removed first; no filter runs (not even
the built-in line-ending ones: :func:`_checkout_unfiltered`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .inproc import _LINK, _entry, _pygit2, repository


def _symlinks(top: str) -> list[str]:
    """Relative paths of every symlink under ``top`` (the walk never follows one); the root's ``.git`` skipped."""
    found: list[str] = []
    stack = [(top, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if not rel and entry.name == ".git":
                    continue
                try:
                    if entry.is_symlink():
                        found.append(f"{rel}{entry.name}")
                    elif entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, f"{rel}{entry.name}/"))
                except OSError:
                    continue
    return found


def _check_out(repo: Any, top: str, tree: Any, current: Any = None) -> None:
    """Make the work tree and index hold exactly ``tree``: ``checkout -f`` + ``clean -ffdx``.

    ``current`` is the tree HEAD still points at (the checkout's baseline), or None. Why the symlink pass
    first: libgit2 writes through a folder an agent replaced with a symlink (git does not), so every symlink
    that ``tree`` does not hold as the same link is removed before the checkout, and no path it writes or
    removes goes through one. The index is kept (staged work included: against the baseline, what it adds
    counts as untracked and goes, what it changes is reset): its file stats let libgit2 skip every file
    unchanged since (a stat per file instead of reading and hashing each, ~4x less CPU). Without a baseline,
    or with a conflict in the index, the index is set to ``tree`` first, so whatever is not in ``tree`` counts
    as untracked and goes with the rest.
    """
    from pygit2.enums import CheckoutStrategy

    for rel in _symlinks(top):
        kept = _entry(tree, rel)
        full = os.path.join(top, rel)
        if kept is not None and kept[1] == _LINK and repo[kept[0]].data == os.fsencode(os.readlink(full)):
            continue
        os.unlink(full)
    index = repo.index
    index.read(False)
    if current is None or index.conflicts is not None:
        index.read_tree(tree)
        index.write()
    strategy = CheckoutStrategy.FORCE | CheckoutStrategy.REMOVE_UNTRACKED | CheckoutStrategy.REMOVE_IGNORED
    _checkout_unfiltered(repo, tree, strategy)


def _checkout_unfiltered(repo: Any, tree: Any, strategy: int) -> None:
    """``repo.checkout_tree`` with libgit2's ``disable_filters`` (pygit2 does not expose it): blobs are written
    as stored, no end-of-line or ident conversion.

    Why: choosing a file's filters looks up its attributes, a realpath and a stat per folder level, ~35 % of a
    reset's CPU; no external filter ever runs here anyway (rule 7), and a worker's commit normalizes line
    endings as before.
    """
    from pygit2.errors import check_error
    from pygit2.ffi import C, ffi

    opts = ffi.new("git_checkout_options *")
    check_error(C.git_checkout_options_init(opts, 1))
    opts.checkout_strategy = int(strategy)
    opts.disable_filters = 1
    target = ffi.new("git_object **")
    ffi.buffer(target)[:] = tree._pointer[:]
    check_error(C.git_checkout_tree(repo._repo, target[0], opts))


def populate(git_dir: Path | str, path: Path | str) -> None:
    """Check out HEAD into a worktree just made with nothing checked out (``reset --hard``)."""
    with repository(git_dir, pooled=False) as repo:
        _check_out(repo, os.fspath(path), repo.head.peel(_pygit2().Tree))


def reset_worktree(git_dir: Path | str, path: Path | str, branch: str, base: str) -> bool:
    """``git checkout -f -b BRANCH BASE`` + ``git clean -ffdx`` in a parked worktree; False if ``branch`` exists.

    Only files that differ are rewritten. The checkout runs before HEAD moves, so HEAD's tree is its baseline;
    on a failure HEAD has not moved and the error is raised.
    """
    pygit2 = _pygit2()
    with repository(git_dir, pooled=False) as repo:
        commit = repo[pygit2.Oid(hex=base)]
        ref = f"refs/heads/{branch}"
        if ref in repo.references:
            return False
        try:
            current = repo.head.peel(pygit2.Tree)
        except (pygit2.GitError, KeyError):
            current = None
        _check_out(repo, os.fspath(path), commit.tree, current)
        repo.references.create(ref, commit.id)
        # Not ``set_head``: libgit2 then reads every linked worktree's HEAD to refuse a branch checked out
        # elsewhere (~47 ms of CPU with 300 worktrees, growing with them); this branch was just made here.
        repo.references.create("HEAD", ref, force=True)
    return True
