"""In-process git (libgit2 through pygit2) for the hot path: a worker's commit, a landing's merge, its commit
and the compare-and-swap on the shared branch.

Why: at 1,024 workers ~51 tasks land per second, and each git process costs 3-15 ms of CPU on a busy 2-core
machine (exec, reading the index and config), while the same object-level work done in-process costs well under
a millisecond. A new or parked worktree's checkout is in-process too (:mod:`.checkout`). Everything else
(worktree removal, conflict hand-back, the repository map) stays on git processes through :mod:`.run`: they are
not hot, or git does them more safely.

The trust boundary holds (rule 7): libgit2 runs no hooks, has no fsmonitor and runs no external filter or merge
drivers; its global, XDG and system config search paths point at formicary's private empty folder (the same one
git processes get as ``HOME``), so the operator's own config is never read; a worktree's repository is opened by
its git dir under the repository's ``worktrees/`` (never through the worktree's ``.git`` file, which an agent can
rewrite).

The merge is a plain three-way merge of trees (no rename detection): it lands what touches disjoint paths and
hands anything else to ``git merge-tree`` (:func:`merge_trees` returns None), so every conflict, rename or
file/folder clash is decided and described by git as before.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Collection, Container, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.lowlevel import RunVar

from .run import GitError, MergeTreeResult, git, parse_merge_tree, per_loop_limiter, private_home

if TYPE_CHECKING:
    import pygit2

_TREE = 0o040000
_LINK = 0o120000
_configured = False
_config_lock = threading.Lock()
_pools: dict[str, list[Any]] = {}
_pools_lock = threading.Lock()
POOL_MAX = 4
"""Repository handles kept per repository (a handle is used by one thread at a time)."""


def _pygit2() -> Any:
    """Import pygit2 (~90 ms) on first use, and point libgit2's config search paths at the private folder.

    Two of libgit2's checks that git itself does not make are turned off: hashing every object read to
    verify it, and looking up every object a new tree, commit or index entry names to see it exists (both
    read loose objects again: ~40 % of a reset's CPU). Every object named here was just read or written by
    formicary, and git's fsck still finds a corrupt object store.
    """
    global _configured
    import pygit2

    if not _configured:
        with _config_lock:
            if not _configured:
                from pygit2.enums import ConfigLevel

                pygit2.settings.enable_strict_hash_verification(False)
                pygit2.settings.enable_strict_object_creation(False)

                home = private_home()
                for level in (
                    ConfigLevel.GLOBAL,
                    ConfigLevel.XDG,
                    ConfigLevel.SYSTEM,
                    ConfigLevel.PROGRAMDATA,
                ):
                    pygit2.settings.search_path[level] = home
                _configured = True
    return pygit2


@contextmanager
def repository(path: Path | str, pooled: bool = True) -> Iterator[pygit2.Repository]:
    """A handle on the repository at ``path`` (a git dir), for this thread only; returned to a small pool
    unless ``pooled`` is False (a worktree's: opening one costs ~0.1 ms, keeping one per worker ~100 KB)."""
    pygit2 = _pygit2()
    key = str(path)
    repo = None
    if pooled:
        with _pools_lock:
            free = _pools.get(key)
            repo = free.pop() if free else None
    if repo is None:
        from pygit2.enums import RepositoryOpenFlag

        repo = pygit2.Repository(key, RepositoryOpenFlag.NO_SEARCH)
    try:
        yield repo
    finally:
        if pooled:
            with _pools_lock:
                free = _pools.setdefault(key, [])
                if len(free) < POOL_MAX:
                    free.append(repo)


INPROC_THREADS = 4
"""Threads running libgit2 work at once. Why few: it is CPU work under one GIL on a machine of a few cores;
64 threads at it (git's process limit) only queue on the GIL, and each of the landing's calls then waits its
turn behind them."""
_inproc_threads: RunVar[anyio.CapacityLimiter] = RunVar("formicary_inproc_threads")
_landing_thread: RunVar[anyio.CapacityLimiter] = RunVar("formicary_landing_thread")
_locked_thread: RunVar[anyio.CapacityLimiter] = RunVar("formicary_locked_thread")


async def in_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on one of libgit2's threads (file and object I/O never blocks the event loop)."""
    return await anyio.to_thread.run_sync(
        lambda: fn(*args), limiter=per_loop_limiter(_inproc_threads, INPROC_THREADS)
    )


async def in_landing_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on the landing's own thread: the serial critical section never queues behind a
    worktree's checkout or commit (one thread is enough: one landing runs at a time)."""
    return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=per_loop_limiter(_landing_thread, 1))


async def in_locked_thread(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` on a thread of its own for work done while holding a lock (making a worktree under the
    worktree lock). Why: on libgit2's shared threads it queued behind every worker's checkout and commit while
    holding the lock, so 1,024 worktrees were made one queue-wait (~1 s) apart and the first wave took 15 min."""
    return await anyio.to_thread.run_sync(lambda: fn(*args), limiter=per_loop_limiter(_locked_thread, 1))


def clean_message(text: str) -> str:
    """What ``git commit -m`` stores: trailing spaces and surrounding blank lines gone, blank runs collapsed."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if line or (out and out[-1]):
            out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n" if out else ""


def signature(name: str, email: str) -> Any:
    return _pygit2().Signature(name, email)


def commit_worktree(
    git_dir: Path,
    message: str,
    name: str,
    email: str,
    paths: Collection[str] | None = None,
    before_scan: Callable[[], None] | None = None,
    leave_out: Collection[str] = (),
) -> tuple[str, list[str]] | None:
    """``git add -A`` + ``git commit`` in a worktree: the new commit and the paths it changed, None if none.

    With ``paths`` (a worktree where nothing but formicary's tools changed these paths since it matched its
    HEAD: :mod:`formicary.agents.tools.changes`), only those files are read (blobs hashed in-process), nothing
    else is looked at, and the index is neither read nor written (~2 ms on a 2,000-file repository): its
    entries for these paths stay behind, which any later scan sees from their stat data, as for any file
    changed after it was staged (``before_scan`` is called first when these paths cannot be applied alone and
    the tree is scanned after all: files a lazy reset left for later are written then). Without, the index is
    refreshed from the whole work tree (stat first, hashing only what changed) and written back; ``leave_out``
    (generated files formicary put there, unchanged: :mod:`.generated`) stays out of it unless HEAD has them. The new tree is
    HEAD's with the changed entries put in (only the trees on their paths are written: the cost follows the
    change, not the repository); the commit moves the
    worktree's branch through HEAD. Gitlinks stay gitlinks (their folders are not added).
    """
    with repository(git_dir, pooled=False) as repo:
        parent = repo.head.target
        before = repo[parent].tree
        changes = _read_paths(repo, before, paths) if paths is not None else None
        tree = None
        if changes is not None:
            # a path under a gitlink, or a file where a folder was (_NotTrivial): the whole scan decides
            try:
                tree = (_apply(repo, before, changes) or repo.TreeBuilder().write()) if changes else before.id
            except _NotTrivial:
                tree = None
        if tree is None:
            if before_scan is not None:
                before_scan()
            index = repo.index
            index.read(False)
            index.add_all()
            for rel in leave_out:
                if rel in index and _entry(before, rel) is None:
                    index.remove(rel)
            index.write()
            changes = _changes(index.diff_to_tree(before))
            if changes:
                try:
                    tree = _apply(repo, before, changes) or repo.TreeBuilder().write()
                except _NotTrivial:  # a file became a folder or the reverse: let libgit2 build every tree
                    tree = index.write_tree()
        if not changes or tree == before.id:
            return None
        sig = signature(name, email)
        sha = repo.create_commit("HEAD", sig, sig, clean_message(message), tree, [parent])
        return str(sha), sorted(changes)


def _read_paths(repo: Any, before: Any, paths: Collection[str]) -> dict[str, tuple[Any, int] | None] | None:
    """What ``git add -A -- PATHS`` would stage, as changes from the tree ``before`` (blobs written); None when a
    path holds anything but a regular file or cannot be read (the caller scans the whole tree instead)."""
    pygit2 = _pygit2()
    top = repo.workdir
    changes: dict[str, tuple[Any, int] | None] = {}
    try:
        for rel in sorted(paths):
            old = _entry(before, rel)
            try:
                st_mode = os.lstat(os.path.join(top, rel)).st_mode
            except FileNotFoundError:
                new = None
            else:
                if not stat.S_ISREG(st_mode):
                    return None  # tools write regular files only: something else made this
                if old is None and repo.path_is_ignored(rel):
                    continue  # ``add -A`` leaves an untracked ignored file out
                mode = 0o100755 if st_mode & 0o100 else 0o100644
                if old is not None and old[1] != mode and not repo.config.get_bool("core.filemode"):
                    mode = old[1]  # as git: without core.filemode, the executable bit stays what it was
                new = (repo.create_blob_fromworkdir(rel), mode)
            if new != old:
                changes[rel] = new
    except (pygit2.GitError, OSError, ValueError, KeyError):
        return None
    return changes


def _changes(diff: Any) -> dict[str, tuple[Any, int] | None]:
    """A diff's new side by path: (id, mode), or None where the path was deleted."""
    from pygit2.enums import DeltaStatus

    changes: dict[str, tuple[Any, int] | None] = {}
    for delta in diff.deltas:
        if delta.status == DeltaStatus.DELETED:
            changes.setdefault(delta.old_file.path, None)
        else:
            changes[delta.new_file.path] = (delta.new_file.id, delta.new_file.mode)
    return changes


class _NotTrivial(Exception):
    """Both sides changed one path, or a file meets a folder: git decides (conflict, rename, clash)."""


def _entry(tree: Any, path: str) -> tuple[Any, int] | None:
    try:
        found = tree[path]
    except (KeyError, ValueError):
        return None
    return found.id, found.filemode


def _apply(repo: Any, tree: Any, changes: dict[str, tuple[Any, int] | None]) -> Any:
    """``tree`` (or an empty one) with ``changes`` (path → (id, mode), None: deleted) applied; None if empty."""
    builder = repo.TreeBuilder(tree) if tree is not None else repo.TreeBuilder()
    below: dict[str, dict[str, tuple[Any, int] | None]] = {}
    here: list[tuple[str, tuple[Any, int] | None]] = []
    for path, entry in changes.items():
        name, sep, rest = path.partition("/")
        if sep:
            below.setdefault(name, {})[rest] = entry
        else:
            here.append((name, entry))
    for name, sub in below.items():
        current = builder.get(name)
        if current is not None and current.filemode != _TREE:
            raise _NotTrivial  # a file where the change needs a folder
        new = _apply(repo, repo[current.id] if current is not None else None, sub)
        if new is not None:
            builder.insert(name, new, _TREE)
        elif current is not None:
            builder.remove(name)
    for name, entry in here:
        current = builder.get(name)
        if current is not None and current.filemode == _TREE:
            raise _NotTrivial  # a folder where the change puts a file
        if entry is not None:
            builder.insert(name, entry[0], entry[1])
        elif current is not None:
            builder.remove(name)
    return builder.write() if len(builder) else None


def merge_trees(git_dir: Path | str, tip: str, head: str) -> str | None:
    """The merged tree of ``head`` onto ``tip`` when no path ``head`` changed since their merge base changed
    on ``tip`` too (or changed the same way); None otherwise: ask ``git merge-tree``.

    Only the paths ``head`` changed are looked at (a tree diff in libgit2, no blob read), so the cost does not
    grow with the repository or with what landed meanwhile.
    """
    with repository(git_dir) as repo:
        return _merge(repo, tip, head)


def _merge(repo: Any, tip: str, head: str, known: Container[str] = ()) -> str | None:
    merged = merge_onto(repo, tip, head, known)
    return None if merged is None else merged[0]


def merge_onto(repo: Any, tip: str, head: str, known: Container[str] = ()) -> tuple[str, list[str]] | None:
    """:func:`merge_trees` on an open repository, with the paths the merge changes on ``tip``."""
    pygit2 = _pygit2()
    tip_id, head_id = pygit2.Oid(hex=tip), pygit2.Oid(hex=head)
    base = _known_base(repo, head_id, known) or repo.merge_base(tip_id, head_id)
    if base is None:
        return None
    return three_way(repo, repo[tip_id].tree, repo[head_id].tree, repo[base].tree)


def three_way(repo: Any, ours: Any, theirs: Any, common: Any) -> tuple[str, list[str]] | None:
    """``theirs``' changes since ``common`` put on ``ours`` (trees), and the paths that changes on ``ours``; None
    when a path ``theirs`` changed was changed differently on ``ours`` too, or a file meets a folder."""
    if theirs.id == common.id or theirs.id == ours.id:
        return str(ours.id), []
    from pygit2.enums import DiffOption

    changes = _changes(repo.diff(common, theirs, flags=DiffOption.SKIP_BINARY_CHECK))
    touched: list[str] = []
    for path, entry in changes.items():
        now = _entry(ours, path)
        if now == entry:
            continue
        if now != _entry(common, path):
            return None
        touched.append(path)
    if ours.id == common.id:
        return str(theirs.id), touched
    try:
        merged = _apply(repo, ours, changes)
    except _NotTrivial:
        return None
    return str(merged if merged is not None else repo.TreeBuilder().write()), touched


HINT_DEPTH = 16
"""Commits walked back from a task's head looking for a tip the branch is known to have passed through."""


def _known_base(repo: Any, head: Any, known: Container[str]) -> Any:
    """The merge base of ``head`` and a tip, without git's walk, when ``head`` reaches one of ``known`` (every one
    an ancestor of that tip) through single-parent commits alone: that one. None: ask ``merge_base``.

    Why: the walk goes back through every landing since the task began (~1,000 at 1,024 workers), inside the
    serial landing. Sound because a task's own commits never become the branch's ancestors (each landing
    is a new commit on the tip), so none between ``head`` and the one found can be a better base; a merge
    commit on the way (a conflict hand-back) stops the shortcut.
    """
    if not known:
        return None
    commit = repo[head]
    for _ in range(HINT_DEPTH):
        if str(commit.id) in known:
            return commit.id
        parents = commit.parent_ids
        if len(parents) != 1:
            return None
        commit = repo[parents[0]]
    return None


def commit_tree(
    git_dir: Path | str, tree: str, parents: list[str], message: str, name: str, email: str
) -> str:
    """``git commit-tree``: a commit object of ``tree`` with ``parents``, by ``name``/``email``, now."""
    with repository(git_dir) as repo:
        return _commit(repo, tree, parents, message, name, email)


def _commit(repo: Any, tree: str, parents: list[str], message: str, name: str, email: str) -> str:
    pygit2 = _pygit2()
    sig = signature(name, email)
    ids = [pygit2.Oid(hex=p) for p in parents]
    text = message if message.endswith("\n") else f"{message}\n"
    return str(repo.create_commit(None, sig, sig, text, pygit2.Oid(hex=tree), ids))


def compare_and_swap(git_dir: Path | str, ref: str, new: str, old: str, log: str) -> bool:
    """``git update-ref -m LOG REF NEW OLD``: move ``ref`` to ``new`` only if it still points at ``old``.

    libgit2 takes the ref's lock file like git does and re-checks the old value under it, so a concurrent git
    process (another formicary, the operator) and this one never both win.
    """
    with repository(git_dir) as repo:
        return _cas(repo, ref, new, old, log)


def _cas(repo: Any, ref: str, new: str, old: str, log: str) -> bool:
    pygit2 = _pygit2()
    try:
        current = repo.lookup_reference(ref)
    except (KeyError, pygit2.GitError):
        return False
    if current.type != pygit2.enums.ReferenceType.DIRECT or str(current.target) != old:
        return False
    try:
        current.set_target(pygit2.Oid(hex=new), log)
    except (pygit2.GitError, OSError, ValueError):
        return False
    return True


# -- the async calls the landing code makes (each replaces one git process on the hot path) -----------------


async def merge_tree(root: Path | str, tip: str, head: str) -> MergeTreeResult:
    """``git merge-tree --write-tree -z tip head``: in-process when no path changed on both sides, else git
    (which writes the conflicted files with markers and names every conflict)."""
    tree = await in_thread(merge_trees, root, tip, head)
    if tree is not None:
        return MergeTreeResult(tree=tree, clean=True)
    res = await git("merge-tree", "--write-tree", "-z", tip, head, cwd=root, check=False)
    if res.rc not in (0, 1):
        raise GitError(f"git merge-tree failed: {res.err.strip()[:200]}")
    return parse_merge_tree(res.out, clean=res.rc == 0)


async def new_commit(
    root: Path | str, tree: str, parents: list[str], message: str, env: Mapping[str, str]
) -> str:
    """``git commit-tree TREE -p … -m MESSAGE`` with the author of ``env`` (an :meth:`Identity.env`)."""
    name, email = env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"]
    return await in_thread(commit_tree, root, tree, parents, message, name, email)


async def update_ref(
    root: Path | str, ref: str, new: str, old: str, log: str = "formicary: integrate"
) -> bool:
    """``git update-ref -m LOG REF NEW OLD``; True when the branch moved."""
    return await in_thread(compare_and_swap, root, ref, new, old, log)
