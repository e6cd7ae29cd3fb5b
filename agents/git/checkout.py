"""Checking a worktree out in-process (libgit2): a new worktree's first checkout and a parked one's reset to
a new task's base, each the equivalent of ``checkout -f`` + ``clean -ffdx``.

Why in-process: a parked worktree reset by git processes cost a process per task and rewrote more than what
changed; here only the files that differ are written, and the index's stats let unchanged files be skipped.
Trust (rule 7): libgit2's checkout writes through a directory an agent replaced with a symlink (git does not),
so every symlink the target tree does not hold as the same link is removed first; no filter runs (not even
the built-in line-ending ones: :func:`_checkout_unfiltered`).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Collection, Container
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
        _start_branch(repo, ref, commit.id)
    return True


def _start_branch(repo: Any, ref: str, commit_id: Any) -> None:
    """Make ``ref`` at ``commit_id`` and point HEAD at it.

    Not ``set_head``: libgit2 then reads every linked worktree's HEAD to refuse a branch checked out elsewhere
    (~47 ms of CPU with 300 worktrees, growing with them); this branch was just made here.
    """
    repo.references.create(ref, commit_id)
    repo.references.create("HEAD", ref, force=True)


_TREE_MODES = (0o040000, 0o160000)  # a folder in the work tree: a tree, or a gitlink's empty folder
_WRITE = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


BLOB_CACHE_BYTES = 32 << 20
"""Bytes of recently written blobs kept in memory (most of them small files)."""
BLOB_CACHE_MAX = 64 << 10
"""Larger blobs are read from the object store each time."""
_blobs: dict[Any, bytes] = {}
_blobs_bytes = 0
_blobs_lock = threading.Lock()


def _blob(odb: Any, oid: Any) -> bytes:
    """A blob's bytes, from memory when a reset wrote it lately. Why: every landing's new blob is written into
    each parked worktree reset after it (~W times for W workers); a loose object read costs ~10 us of CPU, a
    third of writing a file, and blobs never change."""
    global _blobs_bytes
    data = _blobs.get(oid)
    if data is None:
        data = odb.read(oid)[1]
        if len(data) <= BLOB_CACHE_MAX:
            with _blobs_lock:
                if oid not in _blobs:
                    _blobs[oid] = data
                    _blobs_bytes += len(data)
                    while _blobs_bytes > BLOB_CACHE_BYTES:  # the oldest first
                        _blobs_bytes -= len(_blobs.pop(next(iter(_blobs))))
    return data


class NotKnown(Exception):
    """The worktree does not hold what a known-clean reset assumes: reset it in full instead."""


def reset_lazy(
    git_dir: Path | str,
    path: Path | str,
    branch: str,
    base: str,
    dirty: Collection[str],
    pending: Container[str] = frozenset(),
) -> tuple[set[str], set[str], str] | None:
    """Point a known worktree at a new ``branch`` from ``base`` and say which more files must be written:
    ``(paths, structural, tree)`` — the paths that differ between HEAD's tree and ``base``'s and ``dirty`` (the
    tools wrote them), the ones among them that may be added or removed, and the tree's id; files still
    ``pending`` from the last reset stay so. None (nothing done) when ``branch`` exists.

    Nothing is written but the index (entries of unchanged paths keep their stat data: a later scan does not
    hash those files again) and the refs: the files are written when first used (changes.py, "lazy resets").
    Why: at 1,024 workers every reset had ~1,000 files to write (what landed during the last task), ~20 ms of
    CPU each, most never opened by the next task. The cost here follows the diff, not what is pending. Raises
    :class:`NotKnown` (nothing moved) when a path to write is where the new tree has a folder, or a link is
    where a folder was: a full reset sorts that out.
    """
    pygit2 = _pygit2()
    from pygit2.enums import DeltaStatus, DiffOption

    with repository(git_dir, pooled=False) as repo:
        commit = repo[pygit2.Oid(hex=base)]
        ref = f"refs/heads/{branch}"
        if ref in repo.references:
            return None
        target = commit.tree
        added, moved = set(dirty), set(dirty)  # a tool may have made or removed a file
        diff = repo.diff(repo.head.peel(pygit2.Tree), target, flags=DiffOption.SKIP_BINARY_CHECK)
        for delta in diff.deltas:
            old, new = delta.old_file, delta.new_file
            added.update((old.path, new.path))
            if delta.status != DeltaStatus.MODIFIED or old.mode != new.mode:
                moved.update((old.path, new.path))
        top, folders, around = os.fspath(path), {""}, set()
        for rel in added:
            folder = os.path.dirname(rel)
            _real_folder(top, folder, folders, make=False)  # a link where a folder was (not the tools')
            while folder and folder not in around:
                around.add(folder)
                folder = os.path.dirname(folder)
        # a file to write where the new tree has a folder: only where the diff touched something below it
        for rel in (*dirty, *(p for p in around if p in pending)):
            if (kept := _entry(target, rel)) is not None and kept[1] == 0o040000:
                raise NotKnown(f"{rel} is a folder in the new tree")
        if added:
            index = repo.index
            index.read(False)
            index.read_tree(target)
            index.write()
        _start_branch(repo, ref, commit.id)
    return added, moved, str(target.id)


def write_pending(git_dir: Path | str, path: Path | str, tree: str, paths: Collection[str]) -> None:
    """Write ``paths`` as ``tree`` holds them (removed where it has none) in a known worktree, as the reset of
    :func:`reset_lazy` would have. Trust (rule 7): a known-clean tree holds no symlink but the ones its trees
    track, so no parent of a path written is one (each folder is checked once: a link raises
    :class:`NotKnown`), the file itself is opened without following one, and no filter runs (as in
    :func:`_check_out`).

    Why files are overwritten in place (no ``O_TRUNC``): truncating a file that has data makes ext4 flush it at
    close, ~2.5x the CPU of the whole reset (measured: 1,000 changed files, 100 ms with libgit2's checkout, 40 ms
    here).
    """
    pygit2 = _pygit2()
    top = os.fspath(path)
    with repository(git_dir, pooled=False) as repo:
        target = repo[pygit2.Oid(hex=tree)]
        changes: dict[str, Any] = {}
        for rel in paths:
            kept = _entry(target, rel)
            if kept is not None and kept[1] == 0o040000:  # a folder now: only a file in its way goes
                if _real_folder(top, os.path.dirname(rel), set(), make=False):
                    _clear(os.path.join(top, rel), keep_folder=True)
                continue
            changes[rel] = kept
        _write_changes(repo, top, target, changes)


def _write_changes(repo: Any, top: str, target: Any, changes: dict[str, Any]) -> None:
    """Removals first (a folder a file replaces must be gone), then writes."""
    folders = {""}
    for rel in sorted((p for p, e in changes.items() if e is None), reverse=True):
        if _real_folder(top, os.path.dirname(rel), folders, make=False):
            _remove(top, rel, target)
    odb, folders = repo.odb, {""}  # checked again: a removal may have taken a folder away
    for rel, entry in sorted((p, e) for p, e in changes.items() if e is not None):
        oid, mode = entry
        full = os.path.join(top, rel)
        _real_folder(top, os.path.dirname(rel), folders)
        if mode == 0o160000:  # a gitlink: an empty folder, as git checks it out
            _clear(full, keep_folder=True)
            os.makedirs(full, exist_ok=True)
        elif mode == _LINK:
            _clear(full)
            os.symlink(os.fsdecode(odb.read(oid)[1]), full)
        else:
            _write_file(full, _blob(odb, oid), mode)


def _write_file(full: str, data: bytes, mode: int) -> None:
    """``full`` holds ``data`` with ``mode``'s executable bit; never through a symlink or into another link."""
    executable = mode == 0o100755
    perms = 0o777 if executable else 0o666  # the umask applies, as for git
    try:
        fd = os.open(full, _WRITE, perms)
    except OSError as exc:  # a link (O_NOFOLLOW), a folder, a FIFO: what the new tree replaces by a file
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        _clear(full)
        fd = os.open(full, _WRITE, perms)
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or now.st_nlink > 1:
            raise NotKnown(f"{full} is not a plain file")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if now.st_size > len(data):
            os.ftruncate(fd, len(data))
        perms = now.st_mode & 0o777
        if bool(perms & 0o100) != executable:  # x where r (git's choice), or no x at all
            os.fchmod(fd, perms | (perms & 0o444) >> 2 if executable else perms & ~0o111)
    finally:
        os.close(fd)


def _clear(full: str, keep_folder: bool = False) -> None:
    """Remove what is at ``full`` (a link itself, never what it points at; an empty folder); a folder with
    anything in it raises :class:`NotKnown`."""
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if keep_folder:
            return
        try:
            os.rmdir(full)
        except OSError as exc:
            raise NotKnown(f"{full} is a folder with files in it") from exc
    else:
        os.unlink(full)


def _remove(top: str, rel: str, target: Any) -> None:
    """Remove ``rel`` and every folder above it the new tree does not have (as git does), up to ``top``."""
    _clear(os.path.join(top, rel))
    folder = os.path.dirname(rel)
    while folder:
        kept = _entry(target, folder)
        if kept is not None and kept[1] in _TREE_MODES:
            return
        try:
            os.rmdir(os.path.join(top, folder))
        except FileNotFoundError:
            pass
        except OSError:  # not empty: something else is still in it
            return
        folder = os.path.dirname(folder)


def _real_folder(top: str, rel: str, checked: set[str], make: bool = True) -> bool:
    """Whether the folder ``rel`` and its parents are real folders (never a symlink: :class:`NotKnown`); with
    ``make``, missing ones are made. ``checked``: folders seen to be real already."""
    if rel in checked:
        return True
    if not _real_folder(top, os.path.dirname(rel), checked, make):
        return False
    full = os.path.join(top, rel)
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        if not make:
            return False
        os.mkdir(full)
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise NotKnown(f"{full} is not a folder")
    checked.add(rel)
    return True
