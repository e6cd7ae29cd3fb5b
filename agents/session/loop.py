"""The session loop: set up, run cycles (plan → work → judge), follow controls and budgets, record the end.

Split from :mod:`engine` so the engine file keeps to its control API. Everything here runs on the event loop;
git and sqlite work happen in subprocesses and the writer thread.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import anyio

from ...store import queries as q
from ...store.db import connect, new_id
from ...store.redact import Redactor
from ...store.writer import Writer
from ..model.client import ModelClient
from ..model.errors import find_endpoint_error
from ..status import AgentStatus, Control, CycleReason, CycleStatus, SessionStatus, TaskKind, TaskStatus
from .controls import pid_alive
from .record import Record
from .state import Handoff, Landed, ResumeCycle, SessionState, Task

if TYPE_CHECKING:
    from .engine import Engine, Outcome


async def run_session(engine: Engine) -> Outcome:
    from .engine import Outcome

    settings = engine.settings
    await engine.prepare()
    redactor = Redactor(settings.secret_env_names())
    engine.writer = writer = Writer(engine.db_path, redactor)
    engine.state = state = SessionState(Record(writer, engine.session_id))
    state.record.listeners.extend(engine._listeners)
    engine._deadline = time.monotonic() + settings.limits.wall_time
    outcome = Outcome(SessionStatus.FAILED, "internal error")
    try:
        embedded_url = await _start_embedded(engine)
        slots = engine.embedded.parallel if engine.embedded is not None else None
        engine.client = client = ModelClient(
            writer, engine.session_id, embedded_base_url=embedded_url, embedded_slots=slots
        )
        client.listeners.append(state.on_llm_call)
        client.listeners.append(lambda row: _check_token_budget(engine))
        if engine._paused:
            client.pause()
        await _record_start(engine)
        await _clean_leftovers(engine)
        async with anyio.create_task_group() as services:
            services.start_soon(_poll_controls, engine)
            services.start_soon(_watch_wall_time, engine)
            outcome = await _cycles(engine)
            services.cancel_scope.cancel()
    except BaseException as exc:
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            outcome = Outcome(SessionStatus.STOPPED, engine._stop_reason or "cancelled")
            raise
        fatal = find_endpoint_error(exc)
        if fatal is None:
            if isinstance(exc, Exception):
                outcome = Outcome(SessionStatus.FAILED, f"{type(exc).__name__}: {exc}")
            raise
        # A request retrying cannot fix: the session ends with one line; its unfinished tasks wait for a resume.
        outcome = Outcome(SessionStatus.FAILED, fatal.line)
        engine._stop_reason = engine._stop_reason or fatal.line
        if engine.state is not None and engine.cycle_id is not None:
            _settle_cancelled(engine)
    finally:
        with anyio.CancelScope(shield=True):
            await _record_end(engine, outcome)
    return outcome


async def _clean_leftovers(engine: Engine) -> None:
    """Before any worktree is made: remove what dead processes left (worktrees, a ref lock on our branch).

    Worktrees of sessions still running in another live process are kept; this session's own leftovers are
    orphans by definition, since this process has not made any yet.
    """

    def live_sessions() -> set[str]:
        db = connect(engine.db_path, migrate=False)
        try:
            rows = q.running_sessions(db)
            return {r["id"] for r in rows if r["id"] != engine.session_id and pid_alive(r["pid"])}
        finally:
            db.conn.close()

    live = await anyio.to_thread.run_sync(live_sessions)
    removed = await engine.git.prune_stale(live_sessions=live)
    lock = engine.git.common_dir / "refs" / "heads" / f"{engine.git.branch}.lock"
    if engine.resuming and lock.exists():
        lock.unlink(missing_ok=True)
        removed.append(lock)
    if removed:
        engine.state.record.status(f"removed {len(removed)} leftover worktree(s) or lock(s)")


async def _start_embedded(engine: Engine) -> str | None:
    if not engine.settings.uses_embedded_server():
        return None
    from ..model.server import EmbeddedServer, embedded_status

    status = embedded_status()
    if not status.ready:
        raise RuntimeError(
            f"no model endpoint configured and the local model is not set up ({status.reason}); "
            "run `formicary model setup` or set model.base_url"
        )
    engine.embedded = EmbeddedServer()
    url = await engine.embedded.start()
    engine.state.record.status(f"embedded model server at {url} (log: {engine.embedded.log_path})")
    return url


async def _record_start(engine: Engine) -> None:
    from ..settings import redacted_dump
    from ..tools.sandbox import sandbox_status

    sandbox = sandbox_status(engine.settings.sandbox)
    if engine.resuming:
        await _recover(engine)
    engine.state.record.session_started(
        goal=engine.goal,
        repo=str(engine.git.root),
        branch=engine.git.branch,
        base_sha=engine.git.base_sha,
        config=redacted_dump(engine.settings),
        workers=engine.workers,
        sandbox=sandbox,
        check=engine.check,
        resumed=engine.resuming,
    )
    await engine.writer.aflush()


async def _recover(engine: Engine) -> None:
    """After a crash or stop: the last cycle's unfinished work tasks go back to pending; older leftovers end.

    Planner conversations are disposable: what carries over is the tasks they created. Tasks of cycles that
    are over (or were abandoned by a crash) are cancelled; they are not retried behind the planner's back.
    """

    def load():
        db = connect(engine.db_path)
        try:
            sid = engine.session_id
            return q.tasks(db, sid), q.cycles(db, sid), q.verdicts(db, sid)
        finally:
            db.conn.close()

    rows, cycles, verdicts = await anyio.to_thread.run_sync(load)
    record = engine.state.record
    engine.verdict_notes = verdicts[-1]["notes"] if verdicts else ""
    engine.cycles_judged = len(verdicts)
    engine.cycle_number = cycles[-1]["number"] if cycles else 0
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
    engine._resume_cycle = None
    if last is not None:
        ours = [r for r in rows if r["cycle_id"] == last["id"]]
        pending = [r for r in ours if r["kind"] == TaskKind.WORK and r["status"] == TaskStatus.PENDING]
        planned = any(r["kind"] == TaskKind.WORK for r in ours)
        engine._resume_cycle = ResumeCycle(last["id"], int(last["number"]), pending, planned)
        for r in ours:
            if r["kind"] != TaskKind.WORK and r["status"] == TaskStatus.PENDING:
                record.task_row(r["id"], TaskStatus.DONE if planned else TaskStatus.CANCELLED, ended=True)
    record.status(f"resumed: {requeued} task(s) requeued")


async def _cycles(engine: Engine) -> Outcome:
    from .engine import Outcome

    limits = engine.settings.limits
    record = engine.state.record
    reason = CycleReason.RESUME if engine.resuming else CycleReason.START
    resume: ResumeCycle | None = engine._resume_cycle
    while True:
        if engine._stop_reason:
            return Outcome(SessionStatus.STOPPED, engine._stop_reason)
        if resume is not None and resume.planned:
            engine.cycle_id, engine.cycle_number = resume.cycle_id, resume.number
            start_tip = engine.git.shared.tip
            verdict = await _run_cycle(engine, start_tip, resumed_tasks=resume.pending)
            resume = None
        else:
            if resume is not None:  # crashed while planning: abandon that cycle, plan afresh
                record.cycle_abandoned(resume.cycle_id)
                resume = None
            if engine.cycles_judged >= limits.cycles:
                return Outcome(SessionStatus.STOPPED, f"cycle budget reached ({limits.cycles} cycles)")
            engine.cycle_number += 1
            engine.cycle_id = new_id()
            record.cycle_started(engine.cycle_id, engine.cycle_number, reason)
            verdict = await _run_cycle(engine, engine.git.shared.tip)
        if verdict is None:  # cancelled: fresh start or stop
            record.cycle_ended(engine.cycle_id, engine.cycle_number, CycleStatus.ABANDONED)
            if engine._stop_reason:
                return Outcome(SessionStatus.STOPPED, engine._stop_reason)
            reason = CycleReason.FRESH
            continue
        record.cycle_ended(engine.cycle_id, engine.cycle_number, CycleStatus.DONE)
        engine.verdict_notes = verdict.notes
        engine.cycles_judged += 1
        if verdict.decision == "done":
            return Outcome(SessionStatus.DONE, verdict.reason)
        if engine._stop_reason:
            return Outcome(SessionStatus.STOPPED, engine._stop_reason)
        reason = CycleReason.CONTINUE


async def _run_cycle(engine: Engine, start_tip: str, resumed_tasks: list[dict[str, Any]] | None = None):
    """Plan, work and judge one cycle; None if the operator cancelled it (fresh start or stop)."""
    from ..roles.judge import run_judge
    from ..roles.planner import run_planner

    engine.cycle_handoffs = []
    engine.tasks_created = 0
    engine._fresh = False
    engine._queue.clear()
    verdict = None
    with anyio.CancelScope() as scope:
        engine._cycle_scope = scope
        async with anyio.create_task_group() as group:
            group.start_soon(_scheduler, engine, group)
            if resumed_tasks is not None:
                await _drain_resumed(engine, resumed_tasks)
            else:
                root = engine.state.new_task(
                    engine.cycle_id, TaskKind.PLANNER, f"Cycle {engine.cycle_number}: plan the goal"
                )
                await run_planner(engine, root)
            group.cancel_scope.cancel()
        if not engine._stop_reason:
            verdict = await run_judge(
                engine, engine.cycle_id, engine.cycle_number, start_tip, engine.cycle_handoffs
            )
    engine._cycle_scope = None
    if scope.cancelled_caught or verdict is None:
        _settle_cancelled(engine)
        return None
    return verdict


async def _drain_resumed(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """A resumed cycle has no planner listening: queue its pending tasks and wait for them all."""
    inbox_send, inbox = anyio.create_memory_object_stream[Handoff](100_000)
    parents = {r["parent_id"] for r in rows}
    for parent in parents:
        engine.inboxes[parent] = inbox_send
    for r in rows:
        task = Task(
            id=r["id"],
            cycle_id=r["cycle_id"],
            kind=TaskKind.WORK,
            title=r["title"],
            parent_id=r["parent_id"],
            depth=r["depth"],
            instructions=r["instructions"],
            files=json.loads(r["files"] or "[]"),
            check=r["check_cmd"] or "",
            status=TaskStatus.PENDING,
            attempts=r["attempts"],
        )
        engine.state.tasks[task.id] = task
        engine.enqueue(task)
    for _ in rows:
        await inbox.receive()
    for parent in parents:
        engine.inboxes.pop(parent, None)


def _settle_cancelled(engine: Engine) -> None:
    """After a fresh start or stop, no task of this cycle stays running."""
    state = engine.state
    for task in state.tasks.values():
        if task.cycle_id == engine.cycle_id and task.status in (TaskStatus.RUNNING, TaskStatus.PENDING):
            if task.kind != TaskKind.WORK:
                state.end_task(task, TaskStatus.CANCELLED)
            elif engine._stop_reason:
                state.park_task(task)
            else:
                state.end_task(task, TaskStatus.CANCELLED, error="abandoned by a fresh start")
    for agent in list(state.agents.values()):
        state.end_agent(agent, AgentStatus.CANCELLED)


async def _scheduler(engine: Engine, group: Any) -> None:
    """Start a worker for each queued task while there is a free slot and the session is not paused."""
    while True:
        engine._wake = anyio.Event()
        while engine._queue and engine._running_workers < engine.workers and not engine._paused:
            task = engine._queue.popleft()
            engine._running_workers += 1
            group.start_soon(_worker_slot, engine, task)
        await engine._wake.wait()


async def _worker_slot(engine: Engine, task: Task) -> None:
    from ..roles.worker import run_worker

    try:
        handoff = await run_worker(engine, task)
    finally:
        engine._running_workers -= 1
        engine._poke()
    if handoff is None:  # requeued for another attempt
        engine.enqueue(task)
        return
    engine.cycle_handoffs.append(handoff)
    if handoff.commit:
        engine.landed.append(Landed(task.title, list(task.files), handoff.commit))
    await engine.deliver(handoff)


async def _poll_controls(engine: Engine) -> None:
    """Controls sent by an attached TUI arrive as rows; apply each once and mark it consumed."""
    db = await anyio.to_thread.run_sync(lambda: connect(engine.db_path, migrate=False))
    handlers = {
        Control.PAUSE: engine.pause,
        Control.RESUME: engine.resume,
        Control.FRESH: engine.fresh_start,
        Control.STOP: engine.stop,
    }
    try:
        while True:
            rows = await anyio.to_thread.run_sync(q.pending_controls, db, engine.session_id)
            for row in rows:
                engine.state.record.control_consumed(row["seq"])
                payload = json.loads(row["payload"]) if row["payload"] else {}
                source = row["source"]
                if row["kind"] in handlers:
                    handlers[row["kind"]](source=source)
                elif row["kind"] == Control.STEER:
                    engine.steer(payload.get("text", ""), bool(payload.get("replace_goal")), source=source)
                elif row["kind"] == Control.WORKERS:
                    engine.set_workers(int(payload.get("n", engine.workers)), source=source)
            await anyio.sleep(CONTROL_POLL)
    finally:
        db.conn.close()


CONTROL_POLL = 0.5


async def _watch_wall_time(engine: Engine) -> None:
    while True:
        await anyio.sleep(1.0)
        if time.monotonic() > engine._deadline:
            engine.stop(
                source="budget", reason=f"wall-time budget reached ({engine.settings.limits.wall_time:.0f}s)"
            )
            return


def _check_token_budget(engine: Engine) -> None:
    if engine.state.tokens > engine.settings.limits.tokens and not engine._stop_reason:
        engine.stop(source="budget", reason=f"token budget reached ({engine.settings.limits.tokens} tokens)")


async def _record_end(engine: Engine, outcome: Outcome) -> None:
    writer, state = engine.writer, engine.state
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
            Record(writer, engine.session_id).session_row_ended(outcome.status, outcome.reason)
        if engine.git is not None:
            await engine.git.close()  # the parked worktrees
        if engine.client is not None:
            await engine.client.aclose()
        if engine.embedded is not None:
            await engine.embedded.stop()
    finally:
        await anyio.to_thread.run_sync(writer.close)


def install_signal_handlers(engine: Engine) -> None:
    """Headless: SIGINT/SIGTERM stop gracefully (twice: exit now), SIGUSR1 toggles pause, SIGUSR2 fresh start."""
    import asyncio

    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def on_stop() -> None:
        hits["n"] += 1
        if hits["n"] > 1:
            os._exit(130)
        engine.stop(source="signal")

    def on_pause() -> None:
        (engine.resume if engine._paused else engine.pause)(source="signal")

    loop.add_signal_handler(signal.SIGINT, on_stop)
    loop.add_signal_handler(signal.SIGTERM, on_stop)
    loop.add_signal_handler(signal.SIGUSR1, on_pause)
    loop.add_signal_handler(signal.SIGUSR2, lambda: engine.fresh_start(source="signal"))
