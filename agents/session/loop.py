"""The session loop: set up, run cycles (plan → work → judge), follow controls and budgets, record the end.

It runs over a :class:`~.context.SessionContext` and drives the session through the control API it is handed
(the engine), so it never imports the engine. Everything here runs on the event loop; git and sqlite work
happen in subprocesses and the writer thread.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import anyio

from ...store.db import new_id
from ...store.redact import Redactor
from ...store.writer import Writer
from ..model.client import ModelClient
from ..model.errors import find_endpoint_error
from ..roles.context import Handoff, Landed, Task
from ..roles.judge import run_judge
from ..roles.planner import run_planner
from ..roles.replies import Verdict
from ..roles.worker import run_worker
from ..status import AgentStatus, CycleReason, CycleStatus, Decision, SessionStatus, TaskKind, TaskStatus
from .context import SessionContext
from .controls import SessionControls, poll_controls
from .record import Record
from .recovery import clean_leftovers, drain_resumed, recover
from .state import ResumeCycle, SessionState


@dataclass
class Outcome:
    status: SessionStatus  # done | stopped | failed
    reason: str


async def run_session(ctx: SessionContext, controls: SessionControls) -> Outcome:
    """Open the record, run cycles until the judge says done, a budget runs out or ``controls`` stop it."""
    settings = ctx.settings
    redactor = Redactor(settings.secret_env_names())
    ctx.writer = writer = Writer(ctx.db_path, redactor)
    ctx.state = state = SessionState(Record(writer, ctx.session_id))
    state.record.listeners.extend(ctx.listeners)
    ctx.deadline = time.monotonic() + settings.limits.wall_time
    outcome = Outcome(SessionStatus.FAILED, "internal error")
    try:
        embedded_url = await _start_embedded(ctx)
        slots = ctx.embedded.parallel if ctx.embedded is not None else None
        ctx.client = client = ModelClient(
            writer, ctx.session_id, embedded_base_url=embedded_url, embedded_slots=slots
        )
        client.listeners.append(state.on_llm_call)
        state.on_agent_end = client.forget_agent  # an ended agent's slot is free for others' samples
        client.notices.append(state.record.warning)  # an endpoint taken out, calls waiting, one back
        if ctx.embedded is not None and embedded_url:
            client.revivers[embedded_url] = ctx.embedded.revive
        client.listeners.append(lambda row: _check_token_budget(ctx, controls))
        if ctx.paused:
            client.pause()
        await _record_start(ctx)
        await clean_leftovers(ctx)
        async with anyio.create_task_group() as services:
            services.start_soon(poll_controls, ctx, controls)
            services.start_soon(_watch_wall_time, ctx, controls)
            outcome = await _cycles(ctx)
            services.cancel_scope.cancel()
    except BaseException as exc:
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            outcome = Outcome(SessionStatus.STOPPED, ctx.stop_reason or "cancelled")
            raise
        fatal = find_endpoint_error(exc)
        if fatal is None:
            if isinstance(exc, Exception):
                outcome = Outcome(SessionStatus.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        # A request retrying cannot fix: the session ends with one line; its unfinished tasks wait for a resume.
        outcome = Outcome(SessionStatus.FAILED, fatal.line)
        ctx.stop_reason = ctx.stop_reason or fatal.line
        if ctx.state is not None and ctx.cycle_id is not None:
            _settle_cancelled(ctx)
    finally:
        with anyio.CancelScope(shield=True):
            await _record_end(ctx, outcome)
    return outcome


async def _start_embedded(ctx: SessionContext) -> str | None:
    if not ctx.settings.uses_embedded_server():
        return None
    from ..model.server import EmbeddedServer, embedded_status

    status = embedded_status()
    if not status.ready:
        raise RuntimeError(
            f"no model endpoint configured and the local model is not set up ({status.reason}); "
            "run `formicary model setup` or set model.base_url"
        )
    ctx.embedded = EmbeddedServer()
    url = await ctx.embedded.start()
    ctx.record.status(f"embedded model server at {url} (log: {ctx.embedded.log_path})")
    return url


async def _record_start(ctx: SessionContext) -> None:
    from ..settings import redacted_dump
    from ..tools.sandbox import sandbox_status

    sandbox = sandbox_status(ctx.settings.sandbox)
    if ctx.resuming:
        await recover(ctx)
    ctx.record.session_started(
        goal=ctx.goal,
        repo=str(ctx.git.root),
        branch=ctx.git.branch,
        base_sha=ctx.git.base_sha,
        config=redacted_dump(ctx.settings),
        workers=ctx.workers,
        sandbox=sandbox,
        check=ctx.check,
        resumed=ctx.resuming,
    )
    await ctx.writer.aflush()


async def _cycles(ctx: SessionContext) -> Outcome:
    limits = ctx.settings.limits
    record = ctx.record
    reason = CycleReason.RESUME if ctx.resuming else CycleReason.START
    resume: ResumeCycle | None = ctx.resume_cycle
    while True:
        if ctx.stop_reason:
            return Outcome(SessionStatus.STOPPED, ctx.stop_reason)
        if resume is not None and resume.planned:
            ctx.cycle_id, ctx.cycle_number = resume.cycle_id, resume.number
            start_tip = ctx.git.shared.tip
            verdict = await _run_cycle(ctx, start_tip, resumed_tasks=resume.pending)
            resume = None
        else:
            if resume is not None:  # crashed while planning: abandon that cycle, plan afresh
                record.cycle_abandoned(resume.cycle_id)
                resume = None
            if ctx.cycles_judged >= limits.cycles:
                return Outcome(SessionStatus.STOPPED, f"cycle budget reached ({limits.cycles} cycles)")
            ctx.cycle_number += 1
            ctx.cycle_id = new_id()
            record.cycle_started(ctx.cycle_id, ctx.cycle_number, reason)
            verdict = await _run_cycle(ctx, ctx.git.shared.tip)
        if verdict is None:  # cancelled: fresh start or stop
            record.cycle_ended(ctx.cycle_id, ctx.cycle_number, CycleStatus.ABANDONED)
            if ctx.stop_reason:
                return Outcome(SessionStatus.STOPPED, ctx.stop_reason)
            reason = CycleReason.FRESH
            continue
        record.cycle_ended(ctx.cycle_id, ctx.cycle_number, CycleStatus.DONE)
        ctx.verdict_notes = verdict.notes
        ctx.cycles_judged += 1
        if verdict.decision == Decision.DONE:
            return Outcome(SessionStatus.DONE, verdict.reason)
        if ctx.stop_reason:
            return Outcome(SessionStatus.STOPPED, ctx.stop_reason)
        reason = CycleReason.CONTINUE


async def _run_cycle(
    ctx: SessionContext, start_tip: str, resumed_tasks: list[dict[str, Any]] | None = None
) -> Verdict | None:
    """Plan, work and judge one cycle; None if the operator cancelled it (fresh start or stop)."""
    board = ctx.board
    board.new_cycle()
    verdict = None
    with anyio.CancelScope() as scope:
        ctx.cycle_scope = scope
        async with anyio.create_task_group() as group:
            group.start_soon(board.schedule, lambda task: _work(ctx, task), group)
            if resumed_tasks is not None:
                await drain_resumed(ctx, resumed_tasks)
            else:
                root = ctx.state.new_task(
                    ctx.cycle_id, TaskKind.PLANNER, f"Cycle {ctx.cycle_number}: plan the goal"
                )
                await run_planner(ctx, root)
            group.cancel_scope.cancel()
        if not ctx.stop_reason:
            verdict = await run_judge(ctx, ctx.cycle_id, ctx.cycle_number, start_tip, board.handoffs)
    ctx.cycle_scope = None
    if scope.cancelled_caught or verdict is None:
        _settle_cancelled(ctx)
        return None
    return verdict


def _settle_cancelled(ctx: SessionContext) -> None:
    """After a fresh start or stop, no task of this cycle stays running."""
    state = ctx.state
    for task in state.tasks.values():
        if task.cycle_id == ctx.cycle_id and task.status in (TaskStatus.RUNNING, TaskStatus.PENDING):
            if task.kind != TaskKind.WORK:
                state.end_task(task, TaskStatus.CANCELLED)
            elif ctx.stop_reason:
                state.park_task(task)
            else:
                state.end_task(task, TaskStatus.CANCELLED, error="abandoned by a fresh start")
    for agent in list(state.agents.values()):
        state.end_agent(agent, AgentStatus.CANCELLED)


async def _watch_wall_time(ctx: SessionContext, controls: SessionControls) -> None:
    while True:
        await anyio.sleep(1.0)
        if time.monotonic() > ctx.deadline:
            controls.stop(
                source="budget", reason=f"wall-time budget reached ({ctx.settings.limits.wall_time:.0f}s)"
            )
            return


def _check_token_budget(ctx: SessionContext, controls: SessionControls) -> None:
    if ctx.state.tokens > ctx.settings.limits.tokens and not ctx.stop_reason:
        controls.stop(source="budget", reason=f"token budget reached ({ctx.settings.limits.tokens} tokens)")


async def _record_end(ctx: SessionContext, outcome: Outcome) -> None:
    writer, state = ctx.writer, ctx.state
    if writer is None:
        return
    try:
        if state is not None:
            for task in state.tasks.values():
                if task.status == TaskStatus.RUNNING:
                    state.park_task(task)
            state.record.session_ended(
                outcome.status, outcome.reason, commits=state.commits, tokens=state.tokens
            )
        else:
            Record(writer, ctx.session_id).session_row_ended(outcome.status, outcome.reason)
        if ctx.git is not None:
            await ctx.git.close()  # the parked worktrees
            await ctx.git.maintain()  # worker commits skip git's auto-maintenance; a long run needs it once
        if ctx.client is not None:
            await ctx.client.aclose()
        if ctx.embedded is not None:
            await ctx.embedded.stop()
    finally:
        await anyio.to_thread.run_sync(writer.close)


async def _work(ctx: SessionContext, task: Task) -> Handoff | None:
    """One worker on ``task``; work that landed is remembered so planners never plan it again."""
    handoff = await run_worker(ctx, task)
    if handoff is not None and handoff.commit:
        # the files it changed, not the planned ones: a task planned with its tests that landed without them
        # must not make a later plan for those tests look like a repeat
        ctx.landed.append(Landed(task.title, list(handoff.files or task.files), handoff.commit))
    return handoff
