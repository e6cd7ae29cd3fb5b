"""Workers: one task each, end to end, in their own worktree, knowing nothing of other workers.

The loop (worker_loop.py) runs until the model finishes or a limit ends it; then the work is committed and
integrated. A conflict comes back to this same worker as an observation and it resolves it with the same
actions, then finishes again; a refusal by the landing gate comes back the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model.errors import EndpointError, ModelError
from ..status import AgentStatus, Role, TaskStatus
from . import drafts
from .briefing import conflict_message
from .context import Handoff, Task
from .progress import made_progress
from .worker_loop import WorkerLimit, WorkerLoop

if TYPE_CHECKING:
    from .context import RoleContext

__all__ = ["WorkerLimit", "WorkerLoop", "conflict_message", "run_worker"]


async def run_worker(ctx: RoleContext, task: Task) -> Handoff | None:
    """Own ``task`` end to end. Returns the handoff, or None when the task should be retried."""
    state = ctx.ledger
    agent = state.start_agent(Role.WORKER, task, ctx.settings.role(Role.WORKER).model, task.cycle_id)
    state.start_task(task)
    limits = ctx.settings.limits
    try:
        async with ctx.git.worktree(task.id, agent.id) as wt:
            loop = WorkerLoop(ctx, agent, task, wt)
            await loop.start()
            limit_hit = None
            try:
                finish = await drafts.fill_stubs(loop) or await loop.until_finish()
            except WorkerLimit as exc:  # what it wrote lands only if it made progress and passes the gate
                limit_hit = str(exc)
                finish = {
                    "summary": f"ended by the {limit_hit} before finishing",
                    "notes": "unfinished: check this work",
                }
            summary = str(finish.get("summary") or "").strip() or "(no summary)"
            notes = str(finish.get("notes") or "").strip()
            sha = await ctx.git.commit(wt, f"{task.title}\n\n{summary[:2000]}")
            if sha is None and limit_hit:
                raise WorkerLimit(limit_hit)
            hold = None
            if limit_hit and made_progress(loop.first_check, loop.last_check) is False:
                hold = "its task's tests are no better than before its first edit"
            elif limit_hit and (left := await loop.stubs_left()):  # they would land as if written
                hold = f"{', '.join(left[:3])} still without code"
            if sha is None:
                handoff = Handoff(task.id, task.title, TaskStatus.DONE, f"{summary} (no changes)", notes)
            else:
                result = await ctx.git.integrate(
                    wt,
                    loop.resolve_conflict,
                    writer=ctx.recorder.writer,
                    max_conflict_rounds=limits.conflict_rounds,
                    gate=ctx.gate,
                    on_refusal=None if limit_hit else loop.fix_refusal,
                    max_gate_rounds=limits.gate_rounds,
                    hold=hold,  # recorded, kept on its branch
                )
                if result.status == "empty":
                    handoff = Handoff(task.id, task.title, TaskStatus.DONE, f"{summary} (no changes)", notes)
                elif result.status == "already":  # another task landed the same change: nothing of its own
                    already = f"{summary} (no commit of its own: the shared branch had its change already)"
                    handoff = Handoff(task.id, task.title, TaskStatus.DONE, already, notes)
                elif hold:
                    raise WorkerLimit(
                        f"unfinished ({limit_hit}) and {hold}: not landed; work kept on {wt.branch}"
                    )
                elif result.status != "integrated":
                    unfinished = f"unfinished ({limit_hit}); " if limit_hit else ""
                    raise WorkerLimit(
                        f"{unfinished}integration failed: {result.error or 'conflicts unresolved'}; "
                        f"work kept on {wt.branch}"
                    )
                else:
                    state.landed(
                        agent,
                        task,
                        sha=sha,
                        integrated_sha=result.sha,
                        retries=result.retries,
                        conflicts=result.conflicts,
                        refusals=result.refusals,
                        gate_ms=round(result.gate_ms, 1),
                    )
                    changed = tuple(sorted(wt.changed or ()))
                    handoff = Handoff(
                        task.id, task.title, TaskStatus.DONE, summary, notes, commit=result.sha, files=changed
                    )
    except EndpointError:
        raise  # retrying cannot fix it: the session ends with one line
    except (ModelError, WorkerLimit) as exc:
        reason = exc.reason if isinstance(exc, ModelError) else str(exc)
        state.end_agent(agent, AgentStatus.FAILED)
        if task.attempts < limits.task_attempts and isinstance(exc, ModelError):
            state.requeue_task(task, reason)
            return None
        handoff = Handoff(task.id, task.title, TaskStatus.FAILED, f"failed: {reason}")
        state.end_task(task, TaskStatus.FAILED, error=reason, handoff=handoff)
        return handoff
    state.end_task(task, TaskStatus.DONE, handoff=handoff)
    state.end_agent(agent, AgentStatus.DONE)
    return handoff
