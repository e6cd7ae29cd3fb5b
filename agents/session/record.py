"""The session's writes to the record: each row together with the event that announces it.

The ONLY place in the session that calls the writer, with :mod:`.record_work` (the agents' work: steps, calls,
landings, verdicts), and the only one that writes a control row from another process. "Insert a row, then emit
the same fields as an event" is written once per kind here, so the record and the in-process listeners always
see the same thing. The layers below the session write only their own
rows (the model client its ``llm_calls``, integration its ``commits``) through the writer handed to them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...store.db import connect, iso, now, now_ms
from ...store.packing import Zipped
from ...store.queries import ROW_EVENTS, TASK_EVENTS, lean_event_data
from ...store.writer import Writer
from ..status import CycleReason, CycleStatus, SessionStatus, TaskKind, TaskStatus
from . import events as ev
from .record_work import WorkRecord

if TYPE_CHECKING:
    from ..roles.context import Agent, Handoff, Task

Listener = Callable[[ev.Event], None]

PACKED_KINDS = frozenset({"task_created", "task_started", "task_ended", "commit_landed"})
"""The events written for every task: their ``data`` is compressed against the first of their kind (the same
keys and much the same values each time; ``store.queries`` reads them back). The rare kinds other readers
look into (verdicts, controls, status, warnings) stay plain JSON."""
ROW_KINDS = frozenset(ROW_EVENTS)
"""Events whose ``data`` is what the agent's row says (written just before them, with the same values): stored
without it, ``store.queries`` reads it from the row."""


class Record(WorkRecord):
    """Writes one session's rows and events through the one writer and publishes each event in-process (the
    agents' work is recorded by the methods of :class:`~.record_work.WorkRecord`)."""

    def __init__(self, writer: Writer, session_id: str) -> None:
        self.writer = writer
        self.session_id = session_id
        self.listeners: list[Listener] = []

    def redact(self, text: str) -> str:
        return self.writer.redact(text)

    # -- the timeline ------------------------------------------------------------------------------

    def emit(self, event: ev.Event, *, stored: bool = False) -> None:
        """Append ``event`` to the timeline and show it (redacted, like the row) to the listeners.

        ``stored``: the event's own row (an ``actions`` or ``llm_calls`` row) is already its place in the
        timeline (the ``events`` view), so only the listeners are told.
        """
        event.session_id = self.session_id
        at = now_ms()
        event.created_at = iso(at)
        if not stored:
            data: Any = event.data() or None
            if event.kind in ROW_KINDS:
                data = None
            elif data and event.kind in TASK_EVENTS:
                landed = self.writer.landed(event.task_id) if event.kind == "commit_landed" else {}
                data = lean_event_data(event.kind, data, landed) or None
            if data and event.kind in PACKED_KINDS:
                data = Zipped(json.dumps(data, default=str, ensure_ascii=False), shared=f"event:{event.kind}")
            self.writer.insert(
                "event_log",
                {
                    "session_id": self.session_id,
                    "kind": event.kind,
                    "agent_id": event.agent_id,
                    "task_id": event.task_id,
                    "data": data,
                    "created_at": at,
                },
            )
        if self.listeners:
            shown = event.redacted(self.writer.redact)
            for listener in list(self.listeners):
                listener(shown)

    def status(self, message: str) -> None:
        self.emit(ev.StatusChanged(message=message))

    def warning(self, message: str, *, agent_id: str | None = None, task_id: str | None = None) -> None:
        self.emit(ev.WarningRaised(message=message, agent_id=agent_id, task_id=task_id))

    def control(self, control: str, source: str, **data: Any) -> None:
        self.emit(ev.ControlApplied(control=control, source=source, **data))

    # -- the session -------------------------------------------------------------------------------

    def session_started(
        self,
        *,
        goal: str,
        repo: str,
        branch: str,
        base_sha: str,
        config: dict[str, Any],
        workers: int,
        sandbox: str,
        resumed: bool,
        check: Any = None,
    ) -> None:
        """``check``: the landing gate's :class:`~formicary.agents.tools.check.CheckSpec` (None: not chosen)."""
        if resumed:
            self.writer.update(
                "sessions",
                self.session_id,
                {"status": SessionStatus.RUNNING, "pid": os.getpid(), "ended_at": None, "stop_reason": None},
            )
        else:
            self.writer.insert(
                "sessions",
                {
                    "id": self.session_id,
                    "goal": goal,
                    "repo": repo,
                    "branch": branch,
                    "base_sha": base_sha,
                    "config": json.dumps(config),
                    "status": SessionStatus.RUNNING,
                    "pid": os.getpid(),
                    "started_at": now(),
                },
            )
        if check is not None:
            self.writer.update(
                "sessions", self.session_id, {"check_command": check.command, "check_source": check.source}
            )
        self.emit(
            ev.SessionStarted(
                goal=goal,
                repo=repo,
                branch=branch,
                workers=workers,
                sandbox=sandbox,
                check=check.describe() if check is not None else None,
                resumed=resumed,
            )
        )

    def session_ended(self, status: str, reason: str, *, commits: int, tokens: int) -> None:
        self.emit(ev.SessionEnded(status=status, reason=reason, commits=commits, tokens=tokens))
        self.session_row_ended(status, reason)

    def session_row_ended(self, status: str, reason: str) -> None:
        """The session row's end (also when the session failed before it had state to announce)."""
        self.writer.update(
            "sessions", self.session_id, {"status": status, "stop_reason": reason, "ended_at": now()}
        )

    def set_goal(self, text: str) -> None:
        self.writer.update("sessions", self.session_id, {"goal": text})

    def set_scratchpad(self, text: str) -> None:
        self.writer.update("sessions", self.session_id, {"scratchpad": text})

    def control_consumed(self, seq: int) -> None:
        self.writer.update("controls", seq, {"consumed_at": now()}, pk_column="seq")

    # -- cycles ------------------------------------------------------------------------------------

    def cycle_started(self, cycle_id: str, number: int, reason: CycleReason) -> None:
        self.writer.insert(
            "cycles",
            {
                "id": cycle_id,
                "session_id": self.session_id,
                "number": number,
                "reason": reason,
                "status": CycleStatus.RUNNING,
                "started_at": now(),
            },
        )
        self.emit(ev.CycleStarted(cycle_id=cycle_id, number=number, reason=reason))

    def cycle_ended(self, cycle_id: str, number: int, status: CycleStatus) -> None:
        self.writer.update("cycles", cycle_id, {"status": status, "ended_at": now()})
        self.emit(ev.CycleEnded(cycle_id=cycle_id, number=number, status=status))

    def cycle_abandoned(self, cycle_id: str) -> None:
        """A cycle a crash left running (recovery): its row ends, no event (it ended long ago)."""
        self.writer.update("cycles", cycle_id, {"status": CycleStatus.ABANDONED, "ended_at": now()})

    # -- tasks -------------------------------------------------------------------------------------

    def task_created(self, task: Task) -> None:
        self.writer.insert("tasks", task_row(task, self.session_id))
        self.emit(
            ev.TaskCreated(
                task_id=task.id,
                title=task.title,
                task_kind=task.kind,
                parent_id=task.parent_id,
                depth=task.depth,
                cycle_id=task.cycle_id,
            )
        )

    def task_started(self, task: Task) -> None:
        self.writer.update(
            "tasks", task.id, {"status": TaskStatus.RUNNING, "attempts": task.attempts, "started_at": now()}
        )
        self.emit(
            ev.TaskStarted(task_id=task.id, title=task.title, task_kind=task.kind, attempt=task.attempts)
        )

    def task_requeued(self, task: Task, error: str) -> None:
        self.writer.update("tasks", task.id, {"status": TaskStatus.PENDING, "error": error})
        self.emit(ev.TaskEnded(task_id=task.id, status=TaskStatus.REQUEUED, error=error))

    def task_ended(
        self, task: Task, status: TaskStatus, *, error: str | None = None, handoff: Handoff | None = None
    ) -> None:
        changes: dict[str, Any] = {"status": status, "ended_at": now()}
        if error is not None:
            changes["error"] = error
        landed = self.writer.landed(task.id, forget=True)
        if handoff is not None:
            changes["handoff"] = {
                "summary": handoff.summary,
                "notes": handoff.notes,
                "commit": handoff.commit,
            }
            if handoff.commit and handoff.commit == landed.get("integrated_sha"):
                # the commit its landed commit row names: stored without it, as UTF-8 (store.schema_m015)
                lean = {"summary": handoff.summary, "notes": handoff.notes}
                changes["handoff"] = self.redact(json.dumps(lean, ensure_ascii=False)).encode()
        self.writer.update("tasks", task.id, changes)
        self.emit(
            ev.TaskEnded(
                task_id=task.id,
                status=status,
                error=error,
                summary=handoff.summary[:300] if handoff else None,
            )
        )

    def task_row(
        self, task_id: str, status: TaskStatus, *, error: str | None = None, ended: bool = False
    ) -> None:
        """A task's status changed without news for the UIs (parked back to pending, settled on recovery)."""
        changes: dict[str, Any] = {"status": status}
        if ended:
            changes["ended_at"] = now()
        if error is not None:
            changes["error"] = error
        self.writer.update("tasks", task_id, changes)

    # -- agents ------------------------------------------------------------------------------------

    def agent_started(self, agent: Agent, model: str, cycle_id: str | None) -> None:
        self.writer.insert(
            "agents",
            {
                "id": agent.id,
                "session_id": self.session_id,
                "cycle_id": cycle_id,
                "task_id": agent.task_id,
                "role": agent.role,
                "name": agent.name,
                "model": model,
                "status": "running",
                "started_at": now(),
            },
        )
        self.emit(
            ev.AgentStarted(
                agent_id=agent.id, task_id=agent.task_id, role=agent.role, name=agent.name, model=model
            )
        )

    def agent_ended(self, agent: Agent, status: str) -> None:
        self.writer.update(
            "agents",
            agent.id,
            {
                "status": status,
                "steps": agent.steps,
                "prompt_tokens": agent.prompt_tokens,
                "completion_tokens": agent.completion_tokens,
                "ended_at": now(),
            },
        )
        self.emit(
            ev.AgentEnded(
                agent_id=agent.id,
                task_id=agent.task_id,
                status=status,
                steps=agent.steps,
                prompt_tokens=agent.prompt_tokens,
                completion_tokens=agent.completion_tokens,
            )
        )


def send_control(db_path: Path, session_id: str, kind: str, payload: dict | None, source: str) -> None:
    """A control for a session running in another process: a row its engine polls (see ``controls``)."""
    db = connect(db_path, migrate=False)
    try:
        db.execute(
            "INSERT INTO controls (session_id, kind, payload, source, created_at) VALUES (?, ?, ?, ?, ?)",
            [session_id, kind, json.dumps(payload) if payload else None, source, now()],
        )
    finally:
        db.conn.close()


def task_row(task: Task, session_id: str) -> dict[str, Any]:
    """A task as its new ``tasks`` row (:func:`task_from_row` reads it back)."""
    return {
        "id": task.id,
        "session_id": session_id,
        "cycle_id": task.cycle_id,
        "parent_id": task.parent_id,
        "kind": task.kind,
        "depth": task.depth,
        "title": task.title,
        "instructions": task.instructions,
        "files": task.files,
        "check_cmd": task.check,
        "status": task.status,
        "attempts": task.attempts,
        "created_at": now(),
    }


def task_from_row(row: dict[str, Any]) -> Task:
    """A ``tasks`` row as the task it records (recovery)."""
    from ..roles.context import Task

    return Task(
        id=row["id"],
        cycle_id=row["cycle_id"],
        kind=TaskKind(row["kind"]),
        title=row["title"],
        parent_id=row["parent_id"],
        depth=row["depth"],
        instructions=row["instructions"] or "",
        files=json.loads(row["files"] or "[]"),
        check=row["check_cmd"] or "",
        status=TaskStatus(row["status"]),
        attempts=row["attempts"] or 0,
    )
