"""Starting again after a crash or a stop: what dead processes left behind, and the last cycle's work.

Planner conversations are disposable; what carries over is the record. Recovery reads the tasks, cycles and
verdicts of the session, settles what cannot go on, and hands the loop a :class:`ResumeCycle` to carry on with.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

import anyio

from ...store import queries as q
from ...store.db import connect
from ..git.workspace import TASK_BRANCH_PREFIX
from ..status import CycleStatus, TaskKind, TaskStatus
from .context import SessionContext
from .controls import pid_alive
from .record import task_from_row
from .state import ResumeCycle

RESUMED_INBOX = 100_000
PACKED_LOCK_AGE = 60.0  # seconds


async def clean_leftovers(ctx: SessionContext) -> None:
    """Before any worktree is made: remove what dead processes left (worktrees, a ref lock on our branch).

    Worktrees of sessions still running in another live process are kept; this session's own leftovers are
    orphans by definition, since this process has not made any yet.
    """

    def live_sessions() -> set[str]:
        db = connect(ctx.db_path, migrate=False)
        try:
            rows = q.running_sessions(db)
            return {r["id"] for r in rows if r["id"] != ctx.session_id and pid_alive(r["pid"])}
        finally:
            db.conn.close()

    live = await anyio.to_thread.run_sync(live_sessions)
    removed = await ctx.git.prune_stale(live_sessions=live)
    if ctx.resuming:
        removed += await anyio.to_thread.run_sync(_stale_ref_locks, ctx)
    if removed:
        ctx.record.status(f"removed {len(removed)} leftover worktree(s) or lock(s)")


def _stale_ref_locks(ctx: SessionContext) -> list[Path]:
    """Remove the ref locks a killed process of this session left: its shared branch's, and any under its own
    task branches (``formicary-tasks/<session>/``). Measured: a ``kill -9`` while a worker's task branch was
    being made left its ``.lock``, and the resumed session failed at once ("cannot create branch … failed to lock
    file"). Only this session's refs: no other process writes them, and this one has not started yet. And
    ``packed-refs.lock`` once it is older than :data:`PACKED_LOCK_AGE`: shared by every ref of the repository,
    so it may be another git's at work, but git holds it for milliseconds and never removes a dead one itself
    (while it is there, no task branch can be deleted)."""
    heads = ctx.git.common_dir / "refs" / "heads"
    found = [heads / f"{ctx.git.branch}.lock"]
    packed = ctx.git.common_dir / "packed-refs.lock"  # a batch of task branch deletions rewrites packed-refs
    with contextlib.suppress(OSError):
        if time.time() - packed.lstat().st_mtime > PACKED_LOCK_AGE:
            found.append(packed)
    own = heads / TASK_BRANCH_PREFIX / ctx.session_id
    for folder, _dirs, files in os.walk(own):  # never follows a symlink
        found += [Path(folder) / name for name in files if name.endswith(".lock")]
    removed = []
    for lock in found:
        if lock.is_file():
            lock.unlink(missing_ok=True)
            removed.append(lock)
    return removed


async def recover(ctx: SessionContext) -> None:
    """After a crash or stop: the last cycle's unfinished work tasks go back to pending; older leftovers end.

    Planner conversations are disposable: what carries over is the tasks they created. Tasks of cycles that
    are over (or were abandoned by a crash) are cancelled; they are not retried behind the planner's back.
    """

    def load():
        db = connect(ctx.db_path)
        try:
            sid = ctx.session_id
            return q.tasks(db, sid), q.cycles(db, sid), q.verdicts(db, sid)
        finally:
            db.conn.close()

    rows, cycles, verdicts = await anyio.to_thread.run_sync(load)
    record = ctx.state.record
    ctx.verdict_notes = verdicts[-1]["notes"] if verdicts else ""
    ctx.cycles_judged = len(verdicts)
    ctx.cycle_number = cycles[-1]["number"] if cycles else 0
    last = cycles[-1] if cycles and cycles[-1]["status"] == CycleStatus.RUNNING else None
    for cycle in cycles[:-1] if last else cycles:
        if cycle["status"] == CycleStatus.RUNNING:
            record.cycle_abandoned(cycle["id"])
    requeued = 0
    for row in rows:
        if row["status"] not in (TaskStatus.RUNNING, TaskStatus.PENDING):
            continue
        if last is not None and row["cycle_id"] == last["id"]:
            if row["status"] == TaskStatus.RUNNING:
                record.task_row(row["id"], TaskStatus.PENDING, error="requeued after restart")
                row["status"] = TaskStatus.PENDING
            requeued += row["kind"] == TaskKind.WORK
        else:
            record.task_row(
                row["id"], TaskStatus.CANCELLED, error="its cycle ended before a restart", ended=True
            )
            row["status"] = TaskStatus.CANCELLED
    ctx.resume_cycle = None
    if last is not None:
        ours = [r for r in rows if r["cycle_id"] == last["id"]]
        pending = [r for r in ours if r["kind"] == TaskKind.WORK and r["status"] == TaskStatus.PENDING]
        planned = any(r["kind"] == TaskKind.WORK for r in ours)
        ctx.resume_cycle = ResumeCycle(last["id"], int(last["number"]), pending, planned)
        for r in ours:
            if r["kind"] != TaskKind.WORK and r["status"] == TaskStatus.PENDING:
                record.task_row(r["id"], TaskStatus.DONE if planned else TaskStatus.CANCELLED, ended=True)
    record.status(f"resumed: {requeued} task(s) requeued")


async def drain_resumed(ctx: SessionContext, rows: list[dict[str, Any]]) -> None:
    """A resumed cycle has no planner listening: queue its pending tasks and wait for them all."""
    parents = {r["parent_id"] for r in rows}
    async with ctx.board.shared_inbox(parents, RESUMED_INBOX) as inbox:
        for r in rows:
            task = task_from_row(r)
            ctx.state.tasks[task.id] = task
            ctx.board.enqueue(task)
        for _ in rows:
            await inbox.receive()
