"""Handing a conflict back to the worker that made it: the merged files with markers in its worktree, its
resolution committed as a merge of (its head, the tip) on its task branch.

Kept apart from :mod:`.integration` (which decides when a conflict is handed back): this is the worker-facing
side, run outside the critical section and at normal priority, since the time it takes is a window in which
what lands next can conflict again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio

from .run import MergeTreeResult, cat_blobs, git
from .worktree import Worktree


class HandBackRepo(Protocol):
    """What a hand-back needs of the session's repository (workspace's ``SessionRepo`` is one)."""

    root: Path

    async def scrub(self, wt: Worktree) -> list[str]: ...


@dataclass
class ConflictFile:
    """One conflicted path. ``ours`` is the shared branch's version, ``theirs`` the worker's."""

    path: str
    base: str | None
    ours: str | None
    theirs: str | None
    merged: str | None  # what the worktree holds now: the merge with conflict markers (None: deleted)


@dataclass
class Conflict:
    """What a worker gets back when its change conflicts with what landed meanwhile.

    The files under ``worktree`` already hold the merged text with markers (``<<<<<<< shared`` …
    ``>>>>>>> task``). Edit them (do not commit) and return True once resolved.
    """

    task_id: str
    agent_id: str
    worktree: Path
    tip: str  # the shared-branch commit merged in
    head: str  # the worker's commit
    round: int
    files: list[ConflictFile]
    messages: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]


OnConflict = Callable[[Conflict], Awaitable[bool]]


def _relabel_file(target: Path, tip: str, head: str) -> str | None:
    """Name the marker sides for a reader (merge-tree labels them with commit ids); the merged text, or None
    for a deleted, binary or symlinked path (left as merge-tree wrote it)."""
    if target.is_symlink() or not target.is_file():
        return None
    raw = target.read_bytes()
    if b"\0" in raw[:8000]:
        return None
    text = raw.decode("utf-8", "surrogateescape")
    named = text.replace(f"<<<<<<< {tip}", f"<<<<<<< shared ({tip[:10]})")
    named = named.replace(f">>>>>>> {head}", f">>>>>>> task ({head[:10]})")
    if named != text:
        target.write_bytes(named.encode("utf-8", "surrogateescape"))
    return named.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _has_markers(text: str) -> bool:
    return any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in text.splitlines())


async def hand_back(
    session: HandBackRepo,
    wt: Worktree,
    tip: str,
    merge: MergeTreeResult,
    head: str,
    round_no: int,
    on_conflict: OnConflict | None,
) -> str | None:
    """Put the conflicted merge in the worker's worktree, let it resolve, commit the merge; new head or None.

    Its git processes run at normal priority (not ``background``): the time they take is a window in which
    what lands next can conflict again.
    """
    await session.scrub(wt)
    await git("read-tree", "-u", "--reset", merge.tree, cwd=wt.path, git_dir=wt.git_dir)
    blobs = await cat_blobs(session.root, [e.oid for e in merge.entries])
    files: list[ConflictFile] = []
    for path in merge.paths:
        stages = {e.stage: blobs.get(e.oid) for e in merge.entries if e.path == path}
        merged = _relabel_file(wt.path / path, tip, head)
        files.append(ConflictFile(path, stages.get(1), stages.get(2), stages.get(3), merged))
    conflict = Conflict(wt.task_id, wt.agent_id, wt.path, tip, head, round_no, files, merge.messages)
    resolved = bool(on_conflict) and await on_conflict(conflict)  # type: ignore[misc]
    if resolved:
        for f in files:
            target = wt.path / f.path
            if (
                not target.is_symlink()
                and target.is_file()
                and _has_markers(target.read_text(errors="replace"))
            ):
                resolved = False
    with anyio.CancelScope(shield=True):
        if not resolved:
            await git(
                "read-tree", "-u", "--reset", head, cwd=wt.path, git_dir=wt.git_dir
            )  # back to the worker's own commit
            return None
        await session.scrub(wt)
        await git("add", "-A", cwd=wt.path, git_dir=wt.git_dir)
        wt.changed = None  # a merge of the tip: what the task changed is git's to say now
        tree = (await git("write-tree", cwd=wt.path, git_dir=wt.git_dir)).out.strip()
        msg = f"Merge shared branch into task {wt.task_id} (conflict round {round_no})"
        env = wt.identity.env()
        new = (
            await git(
                "commit-tree",
                tree,
                "-p",
                head,
                "-p",
                tip,
                "-m",
                msg,
                cwd=wt.path,
                git_dir=wt.git_dir,
                env=env,
            )
        ).out.strip()
        await git("update-ref", "HEAD", new, head, cwd=wt.path, git_dir=wt.git_dir)
    return new
