"""A session's git workspace: the shared session branch, one worktree per task, the worker's commit.

The operator's checked-out branch, index and work tree are never modified: the session branch is made with
``git branch`` (no checkout) and every task works in its own linked worktree, in a session folder outside the
repository's work tree, on its own task branch (``formicary-tasks/<session>/<task>``: beside, not under, the
session branch ``formicary/<session>``, since git cannot hold both a ref and a folder of refs of one name).
``git worktree remove/prune`` race when run concurrently (``failed to read .git/worktrees/…/commondir``),
so those commands, and making a worktree (in-process: :mod:`.linked`), take one lock per repository. Landing work on the shared branch is :mod:`formicary.agents.git.integration`.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from ..tools import changes
from ..tools.nested import remove_nested_git
from . import checkout, inproc, linked
from .catch_up import catch_up
from .generated import find_generated, provide, unchanged
from .integration import Conflict, IntegrationResult, SharedBranch, integrate
from .opening import WorkspaceError, new_session_checks, resume_checks
from .run import GitError, Identity, check_name, forget_worktree, git, register_worktree
from .worktree import Worktree

__all__ = ["SessionRepo", "WorkspaceError", "Worktree"]

TASK_BRANCH_PREFIX = "formicary-tasks"
BRANCH_BATCH = 32  # task branches deleted per update-ref process
LAZY_MAX = 4_096
"""Files a parked worktree may have left to write (lazy resets) before they are written at once: a reset's
cost follows its diff, but the pending paths cost memory (~100 bytes each, per worktree) and a search writes
them all."""


class SessionRepo:
    """A target repository opened for one session; create with :meth:`open`, one per repository per process."""

    def __init__(
        self,
        root: Path,
        common_dir: Path,
        session_id: str,
        branch: str,
        base_sha: str,
        tip_tree: str,
        worktrees_dir: Path,
        reuse_worktrees: bool = False,
        follow_changes: bool = False,
    ) -> None:
        self.root = root
        self.common_dir = common_dir
        self.session_id = session_id
        self.branch = branch
        self.base_sha = base_sha
        self.worktrees_dir = worktrees_dir
        self.shared: SharedBranch = SharedBranch(f"refs/heads/{branch}", tip=base_sha, tip_tree=tip_tree)
        self._worktree_lock = anyio.Lock()  # making a worktree, git worktree remove/prune
        self.reuse_worktrees = reuse_worktrees
        self.follow_changes = follow_changes
        self._idle: list[Worktree] = []  # parked worktrees waiting for a task (reuse_worktrees)
        self._doomed: list[tuple[str, str]] = []  # (task branch, sha) to delete in the next batch
        self._slots = 0
        self._closed = False
        self.generated: dict[str, bytes] = {}
        """Ignored files the operator's build generated into its packages, put into every worktree (:mod:`.generated`)."""

    # -- opening ---------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path | str,
        session_id: str,
        *,
        branch: str | None = None,
        resume: bool = False,
        worktrees_dir: Path | None = None,
        reuse_worktrees: bool = False,
        follow_changes: bool = False,
    ) -> SessionRepo:
        """Create the session branch from HEAD (or reopen it with ``resume``) without touching the work tree.

        A new session needs a non-bare repository with commits, a branch checked out (not a detached HEAD)
        and a clean work tree (untracked files count); anything else raises :class:`WorkspaceError` before
        any change. ``resume`` reopens an existing branch: only that branch must exist and be checked out
        nowhere, since formicary moves it by ref updates alone.

        Args:
            path: the repository (any folder inside its work tree).
            session_id: names the default branch ``formicary/<session_id>`` and the worktrees folder.
            branch: the operator's name for the session branch.
            resume: reopen an existing session branch instead of creating it.
            worktrees_dir: the session's worktrees folder; default ``paths.worktrees_dir(session_id)``.
            reuse_worktrees: park a finished task's worktree for the next task instead of removing it
                (much cheaper on big repositories; call :meth:`close` at the end).
            follow_changes: trust that only formicary's tools and processes change a worktree's files, so a
                commit and a reset look at what the tools wrote, not at the whole tree, until a process runs
                there (:mod:`formicary.agents.tools.changes`). Off: files changed behind formicary's back (as
                tests do) are found by a scan, as always.
        """
        check_name(session_id, "session id")
        where = Path(path).expanduser()
        if not where.exists():
            raise WorkspaceError(f"{where} does not exist")
        if not where.is_dir():
            raise WorkspaceError(f"{where} is not a folder")
        probe = await git(
            "rev-parse", "--is-bare-repository", "--git-common-dir", "--show-toplevel", cwd=where, check=False
        )
        lines = probe.out.splitlines()
        if lines[:1] == ["true"]:
            raise WorkspaceError(f"{where} is a bare repository; formicary needs a work tree")
        if probe.rc != 0 or len(lines) < 3:
            if "dubious ownership" in probe.err:  # git's own guard: another user owns the folder
                trust = f"if you trust it: git config --global --add safe.directory {where}"
                raise WorkspaceError(f"git refuses {where}: another user owns it ({trust})")
            if "not a git repository" in probe.err:
                raise WorkspaceError(f"{where} is not a git repository")
            said = next((line.strip() for line in probe.err.splitlines() if line.strip()), "git said nothing")
            raise WorkspaceError(f"{where} is not a git work tree: {said.removeprefix('fatal: ')}")
        root = Path(lines[2])
        common = Path(lines[1])
        common = (common if common.is_absolute() else where / common).resolve()
        branch = branch or f"formicary/{session_id}"
        if worktrees_dir is None:
            from formicary.agents.paths import worktrees_dir as default_dir

            worktrees_dir = default_dir(session_id)
        worktrees_dir = Path(worktrees_dir).expanduser().resolve()
        if worktrees_dir.is_relative_to(root.resolve()):
            raise WorkspaceError(f"worktrees folder {worktrees_dir} must be outside the repository {root}")
        if resume:
            tip, tree = await resume_checks(root, branch)
            opened = cls(
                root, common, session_id, branch, tip, tree, worktrees_dir, reuse_worktrees, follow_changes
            )
            opened.generated = await find_generated(root, common, tip)
            return opened
        head = await new_session_checks(root)
        made = await git("branch", "--no-track", branch, head, cwd=root, check=False)
        if made.rc != 0:
            if "already exists" in made.err:
                raise WorkspaceError(f"branch {branch} already exists; resume that session or name another")
            raise WorkspaceError(f"cannot create branch {branch}: {made.err.strip().splitlines()[-1:]}")
        tree = (await git("rev-parse", f"{head}^{{tree}}", cwd=root)).out.strip()
        opened = cls(
            root, common, session_id, branch, head, tree, worktrees_dir, reuse_worktrees, follow_changes
        )
        opened.generated = await find_generated(root, common, head)
        return opened

    # -- worktrees -------------------------------------------------------------------------------------

    @asynccontextmanager
    async def worktree(self, task_id: str, agent_id: str) -> AsyncIterator[Worktree]:
        """A clean worktree for one task at the shared tip, on its own task branch, released on exit.

        Released whatever the outcome (success, exception, cancellation): removed, or with
        ``reuse_worktrees`` parked for the next task (which gets the equivalent of ``checkout -f -b`` + ``clean
        -ffdx`` at the new tip, in-process: only changed files are rewritten, where a fresh checkout writes them
        all). A task branch
        that holds nothing unlanded (it still points at the integrated head or at its base) is deleted in the
        next batch of deletions (one process per :data:`BRANCH_BATCH`, and at :meth:`close`), by
        compare-and-swap, so work committed behind our back stays. A failed task keeps its branch.
        """
        check_name(task_id, "task id")
        wt = None
        while wt is None and self.reuse_worktrees and self._idle:
            wt = await self._recycle(self._idle.pop(), task_id, agent_id)
        if wt is None:
            wt = await self._add_worktree(task_id, agent_id)
        try:
            if self.generated:
                await inproc.in_thread(provide, wt.path, self.generated)
            yield wt
        finally:
            with anyio.CancelScope(shield=True):
                await self._release(wt)

    def _names(self, task_id: str, n: int) -> tuple[str, Path]:
        suffix = "" if n == 1 else f"-{n}"
        if self.reuse_worktrees:
            self._slots += 1
            folder = self.worktrees_dir / f"slot-{self._slots}"
        else:
            folder = self.worktrees_dir / f"task-{task_id}{suffix}"
        return f"{TASK_BRANCH_PREFIX}/{self.session_id}/{task_id}{suffix}", folder

    async def _add_worktree(self, task_id: str, agent_id: str) -> Worktree:
        base = self.shared.tip or await self.shared.read_tip(self.root)
        self.worktrees_dir.mkdir(parents=True, exist_ok=True)
        for n in range(1, 100):
            branch, path = self._names(task_id, n)
            if path.exists():
                continue
            async with self._worktree_lock:  # an in-process prune never sees one half made
                with anyio.CancelScope(shield=True):
                    try:
                        git_dir = await inproc.in_locked_thread(
                            linked.add_worktree, self.common_dir, path, branch, base
                        )
                    except OSError as exc:
                        raise GitError(f"worktree add failed: {exc}") from exc
            if git_dir is not None:
                break
        else:
            raise GitError(f"no free worktree name for task {task_id}")
        wt = Worktree(
            path=path, branch=branch, base=base, task_id=task_id, agent_id=agent_id, git_dir=git_dir
        )
        try:
            register_worktree(path, git_dir)
            # The checkout itself runs outside the lock: it is the slow part and touches only this worktree.
            await inproc.in_thread(checkout.populate, wt.git_dir, path)
            if self.follow_changes:
                wt.followed = changes.follow(path)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._drop_worktree(wt)
            raise
        return wt

    async def _recycle(self, old: Worktree, task_id: str, agent_id: str) -> Worktree | None:
        """Point a parked worktree at a new task branch from the tip; None (and removed) if it won't.

        A worktree only the tools changed since its last full reset is reset lazily (:func:`checkout.reset_lazy`:
        the files that differ are written when first used, changes.py); any other, or one that turns out not to
        be as known, gets a full checkout + clean after a scrub.
        """
        base = self.shared.tip or await self.shared.read_tip(self.root)
        followed = old.followed
        known = followed is not None and followed.known
        if followed is not None:
            changes.unfollow(followed)
        deferred = None
        for n in range(1, 100):
            branch = self._names(task_id, n)[0]
            # No lock: unlike add, a new branch and a checkout read no other worktree's metadata. Shielded, so a
            # cancellation cannot strand the worktree half switched. In-process: see checkout.reset_worktree.
            switched = None
            if known and followed is not None:
                try:
                    with anyio.CancelScope(shield=True):
                        deferred = await inproc.in_thread(
                            checkout.reset_lazy,
                            old.git_dir,
                            old.path,
                            branch,
                            base,
                            sorted(followed.paths),
                            followed.pending,
                        )
                    switched = deferred is not None
                except Exception:  # not as known (a folder where a file goes): in full instead
                    known = False
            if switched is None:
                try:
                    await self.scrub(
                        old
                    )  # a tracked gitlink's folder keeps a planted .git through checkout + clean
                    with anyio.CancelScope(shield=True):
                        switched = await inproc.in_thread(
                            checkout.reset_worktree, old.git_dir, old.path, branch, base
                        )
                except Exception:  # a folder the agent locked, a broken index: start afresh instead
                    await self._drop_worktree(old)
                    return None
            if switched:
                break
        else:
            raise GitError(f"no free branch name for task {task_id}")
        await self._doom(old)  # HEAD has left the last task's branch: it may go now
        wt = Worktree(
            path=old.path, branch=branch, base=base, task_id=task_id, agent_id=agent_id, git_dir=old.git_dir
        )
        if self.follow_changes:
            wt.followed = changes.follow(wt.path, followed.root if followed is not None else None)
            if known and deferred is not None:
                paths, structural, tree = deferred
                writer = partial(checkout.write_pending, old.git_dir, old.path, tree)
                wt.followed.defer(followed, paths, structural, writer)
                if len(wt.followed.pending) > LAZY_MAX:  # a long run without a check: write them now
                    await inproc.in_thread(wt.followed.settle, "")
        return wt

    async def scrub(self, wt: Worktree) -> list[str]:
        """Remove every nested ``.git`` from ``wt`` before formicary's git touches it; recorded on ``wt``."""
        removed = await anyio.to_thread.run_sync(remove_nested_git, wt.path)
        wt.nested_removed.extend(r for r in removed if r not in wt.nested_removed)
        return removed

    async def _worktree_cmd(self, *args: str) -> Any:
        """``git worktree …`` under the caller's lock, retried when another process races on metadata."""
        for _ in range(5):
            res = await git("worktree", *args, cwd=self.root, check=False)
            if res.rc == 0 or "commondir" not in res.err:
                return res
            await anyio.sleep(0.01)
        return res

    async def _release(self, wt: Worktree) -> None:
        if self.reuse_worktrees and not self._closed:
            if _unneeded_at(wt) is None:  # work to keep: detach so its branch is not held checked out
                sha = wt.head or wt.base
                detached = await git(
                    "update-ref",
                    "--no-deref",
                    "HEAD",
                    sha,
                    cwd=wt.path,
                    git_dir=wt.git_dir,
                    check=False,
                    background=True,
                )
                if detached.rc != 0:
                    await self._drop_worktree(wt)
                    return
            self._idle.append(wt)
            return
        await self._drop_worktree(wt)

    async def _drop_worktree(self, wt: Worktree) -> None:
        if wt.followed is not None:
            changes.unfollow(wt.followed)
        await self._remove_folder(wt.path)
        forget_worktree(wt.path)
        await self._doom(wt)

    async def _doom(self, wt: Worktree) -> None:
        if unneeded_at := _unneeded_at(wt):
            self._doomed.append((wt.branch, unneeded_at))
            if len(self._doomed) >= BRANCH_BATCH:
                await self.delete_landed_branches()

    async def delete_landed_branches(self) -> None:
        """Delete the pending task branches now, in one transaction; compare-and-swap each, so moved ones stay."""
        doomed, self._doomed = self._doomed, []
        if not doomed:
            return
        script = "".join(f"delete refs/heads/{branch} {sha}\n" for branch, sha in doomed)
        res = await git(
            "update-ref", "--stdin", cwd=self.root, input=script.encode(), check=False, background=True
        )
        if res.rc != 0:  # all or nothing: one branch moved behind our back, so go one by one
            for branch, sha in doomed:
                await git(
                    "update-ref",
                    "-d",
                    f"refs/heads/{branch}",
                    sha,
                    cwd=self.root,
                    check=False,
                    background=True,
                )

    async def _remove_folder(self, path: Path) -> None:
        async with self._worktree_lock:
            res = await self._worktree_cmd("remove", "--force", "--force", str(path))
            if res.rc != 0:
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))
                await self._worktree_cmd("prune")

    async def close(self) -> None:
        """Remove parked worktrees and delete the pending task branches; call when the session ends."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            idle, self._idle = self._idle, []
            if idle:
                # Folders removed in one thread and metadata in one ``git worktree prune``: a ``worktree remove``
                # per worktree reads every worktree's metadata (minutes at 1,024 parked worktrees).
                async with self._worktree_lock:
                    await anyio.to_thread.run_sync(_remove_folders, [wt.path for wt in idle])
                    await self._worktree_cmd("prune")
                for wt in idle:
                    if wt.followed is not None:
                        changes.unfollow(wt.followed)
                    forget_worktree(wt.path)
                    await self._doom(wt)
            await self.delete_landed_branches()

    async def maintain(self) -> None:
        """``git maintenance run --auto``: worker commits skip it (a process each), so run it between cycles."""
        await git("maintenance", "run", "--auto", "--quiet", cwd=self.root, check=False, background=True)

    async def prune_stale(self, live_sessions: Collection[str] = ()) -> list[Path]:
        """Remove this repository's worktrees left under the worktrees root by sessions not in ``live_sessions``.

        Call on start, before this session makes worktrees. It removes (1) registered worktrees of this
        repository under the root whose session folder is not live, (2) metadata whose folder is gone
        (``git worktree prune``), and (3) folders whose ``.git`` file points into this repository's
        metadata that no longer exists. Folders of other repositories are left alone. Task branches stay.
        """
        root = self.worktrees_dir.parent
        live = set(live_sessions)
        removed: list[Path] = []

        def stale(p: Path) -> bool:
            try:
                rel = p.resolve().relative_to(root)
            except ValueError:
                return False
            return bool(rel.parts) and rel.parts[0] not in live

        async with self._worktree_lock:
            listing = await self._worktree_cmd("list", "--porcelain")
            for line in listing.out.splitlines():
                if line.startswith("worktree ") and stale(p := Path(line[len("worktree ") :])):
                    res = await self._worktree_cmd("remove", "--force", "--force", str(p))
                    if res.rc != 0:
                        await anyio.to_thread.run_sync(lambda p=p: shutil.rmtree(p, ignore_errors=True))
                    removed.append(p)
            await self._worktree_cmd("prune")
            await anyio.to_thread.run_sync(linked.unfinished_metadata, self.common_dir, root, live)
            orphans = await anyio.to_thread.run_sync(linked.orphan_folders, self.common_dir, root, live)
            for p in orphans:
                await anyio.to_thread.run_sync(lambda p=p: shutil.rmtree(p, ignore_errors=True))
                removed.append(p)
        return removed

    # -- commits ---------------------------------------------------------------------------------------

    async def commit(self, wt: Worktree, message: str, identity: Identity | None = None) -> str | None:
        """Commit everything the worker changed (``add -A``) as the worker; None when nothing changed.

        The message gets ``Formicary-Task``/``Formicary-Agent`` trailers. In-process (:mod:`.inproc`): no
        hook, no fsmonitor, no filter program, no auto maintenance (see :meth:`maintain`), no process; the
        task's own check command is what judges the work. While only the tools changed the worktree
        (``wt.followed``), only the paths they wrote are looked at (no scan, no nested ``.git`` to look for:
        the tools refuse that name).
        """
        who = identity or wt.identity
        full = f"{message.rstrip()}\n\nFormicary-Task: {wt.task_id}\nFormicary-Agent: {wt.agent_id}\n"
        paths = sorted(wt.followed.paths) if wt.followed is not None and wt.followed.known else None
        if paths is None:
            await self.scrub(wt)
        if wt.git_dir is None:
            raise GitError(f"worktree {wt.path.name} has no known git dir")
        followed = wt.followed
        settle = (lambda: followed.settle("")) if followed is not None else None
        generated, git_dir = self.generated, wt.git_dir

        def commit() -> tuple[str, list[str]] | None:
            left_out = unchanged(wt.path, generated) if generated and paths is None else ()
            return inproc.commit_worktree(git_dir, full, who.name, who.email, paths, settle, left_out)

        made = await inproc.in_thread(commit)
        if made is None:
            return None
        sha, committed = made
        if wt.changed is not None:
            wt.changed.update(committed)
        wt.head, wt.message = sha, inproc.clean_message(full)
        return sha

    async def catch_up(self, wt: Worktree, edited: Collection[str]) -> list[str]:
        """Bring what landed since ``wt``'s task began into it (see :mod:`.catch_up`); the paths that came in.
        Nested ``.git`` folders a command may have left are removed first, as before a commit's scan."""
        if wt.head is not None or self.shared.tip == wt.base:
            return []
        if wt.followed is None or not wt.followed.known:
            await self.scrub(wt)
        return await catch_up(wt, self.shared.tip, edited)

    async def integrate(
        self,
        wt: Worktree,
        on_conflict: Callable[[Conflict], Awaitable[bool]] | None = None,
        *,
        writer: Any = None,
        max_conflict_rounds: int = 3,
        **gate: Any,
    ) -> IntegrationResult:
        """Land ``wt``'s work on the shared branch; see :func:`formicary.agents.git.integration.integrate`
        (``gate``: its ``gate``, ``on_refusal`` and ``max_gate_rounds``)."""
        return await integrate(
            self, wt, on_conflict, writer=writer, max_conflict_rounds=max_conflict_rounds, **gate
        )


def _remove_folders(paths: list[Path]) -> None:
    """Remove parked worktrees' folders (links inside are removed, never followed)."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _unneeded_at(wt: Worktree) -> str | None:
    """Where the task branch may be deleted: only while it holds nothing unlanded (integrated head or base)."""
    if wt.status == "integrated" and wt.head:
        return wt.head
    if wt.head is None:
        return wt.base
    return None  # a commit that did not land: keep the work
