"""In-memory bookkeeping of a running session, mirrored row by row into the store through the one writer.

The engine, planners and workers change state only through :class:`SessionState`, so every task state change,
agent start and end, and event reaches the record and the in-process listeners the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...store.db import new_id, now
from ...store.writer import Writer
from . import events as ev

Listener = Callable[[dict[str, Any]], None]


@dataclass
class Landed:
    """One task whose work is on the shared branch: planners are shown it and never plan it again."""

    title: str
    files: list[str] = field(default_factory=list)
    commit: str = ""


@dataclass
class Task:
    id: str
    cycle_id: str
    kind: str  # planner | subplanner | work
    title: str
    parent_id: str | None = None
    depth: int = 0
    instructions: str = ""
    files: list[str] = field(default_factory=list)
    check: str = ""
    status: str = "pending"
    attempts: int = 0


@dataclass
class Handoff:
    """What a worker (or a sub-planner) sends back to the planner that made its task."""

    task_id: str
    title: str
    status: str  # done | failed
    summary: str
    notes: str = ""
    commit: str | None = None

    def as_prompt(self) -> dict[str, str]:
        return {"status": self.status, "title": self.title, "summary": self.summary, "notes": self.notes}


@dataclass
class Agent:
    id: str
    role: str
    name: str
    task_id: str | None
    steps: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_action: str = ""


class SessionState:
    """Tasks, agents and counters of one session; every change is written and published."""

    def __init__(self, writer: Writer, session_id: str) -> None:
        self.writer = writer
        self.session_id = session_id
        self.tasks: dict[str, Task] = {}
        self.agents: dict[str, Agent] = {}
        self.listeners: list[Listener] = []
        self.commits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.started = time.monotonic()

    # -- events ------------------------------------------------------------------------------------

    def emit(
        self, kind: str, /, *, agent_id: str | None = None, task_id: str | None = None, **data: Any
    ) -> None:
        self.writer.event(self.session_id, kind, agent_id=agent_id, task_id=task_id, **data)
        if self.listeners:
            event = {
                "kind": kind,
                "session_id": self.session_id,
                "agent_id": agent_id,
                "task_id": task_id,
                "data": {k: self.writer.redact(v) if isinstance(v, str) else v for k, v in data.items()},
                "created_at": now(),
            }
            for listener in list(self.listeners):
                listener(event)

    # -- tasks -------------------------------------------------------------------------------------

    def add_task(self, task: Task) -> Task:
        self.tasks[task.id] = task
        self.writer.insert(
            "tasks",
            {
                "id": task.id,
                "session_id": self.session_id,
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
            },
        )
        self.emit(
            ev.TASK_CREATED,
            task_id=task.id,
            title=task.title,
            kind=task.kind,
            parent_id=task.parent_id,
            depth=task.depth,
            cycle_id=task.cycle_id,
        )
        return task

    def new_task(
        self, cycle_id: str, kind: str, title: str, parent: Task | None = None, **fields: Any
    ) -> Task:
        depth = parent.depth + 1 if parent else 0
        return self.add_task(
            Task(
                id=new_id(),
                cycle_id=cycle_id,
                kind=kind,
                title=title[:200],
                parent_id=parent.id if parent else None,
                depth=depth,
                **fields,
            )
        )

    def start_task(self, task: Task) -> None:
        task.status = "running"
        task.attempts += 1
        self.writer.update(
            "tasks", task.id, {"status": "running", "attempts": task.attempts, "started_at": now()}
        )
        self.emit(ev.TASK_STARTED, task_id=task.id, title=task.title, kind=task.kind, attempt=task.attempts)

    def requeue_task(self, task: Task, error: str) -> None:
        task.status = "pending"
        self.writer.update("tasks", task.id, {"status": "pending", "error": error})
        self.emit(ev.TASK_ENDED, task_id=task.id, status="requeued", error=error)

    def end_task(
        self, task: Task, status: str, *, error: str | None = None, handoff: Handoff | None = None
    ) -> None:
        task.status = status
        changes: dict[str, Any] = {"status": status, "ended_at": now()}
        if error is not None:
            changes["error"] = error
        if handoff is not None:
            changes["handoff"] = {
                "summary": handoff.summary,
                "notes": handoff.notes,
                "commit": handoff.commit,
            }
        self.writer.update("tasks", task.id, changes)
        self.emit(
            ev.TASK_ENDED,
            task_id=task.id,
            status=status,
            error=error,
            summary=handoff.summary[:300] if handoff else None,
        )

    def counts(self) -> dict[str, int]:
        c = Counter(t.status for t in self.tasks.values() if t.kind == "work")
        return {s: c.get(s, 0) for s in ("pending", "running", "done", "failed", "cancelled")}

    # -- agents ------------------------------------------------------------------------------------

    def start_agent(self, role: str, task: Task | None, model: str, cycle_id: str | None) -> Agent:
        agent_id = new_id()
        agent = Agent(
            id=agent_id, role=role, name=f"{role}-{agent_id[-6:].lower()}", task_id=task.id if task else None
        )
        self.agents[agent_id] = agent
        self.writer.insert(
            "agents",
            {
                "id": agent_id,
                "session_id": self.session_id,
                "cycle_id": cycle_id,
                "task_id": agent.task_id,
                "role": role,
                "name": agent.name,
                "model": model,
                "status": "running",
                "started_at": now(),
            },
        )
        self.emit(
            ev.AGENT_STARTED,
            agent_id=agent_id,
            task_id=agent.task_id,
            role=role,
            name=agent.name,
            model=model,
        )
        return agent

    def end_agent(self, agent: Agent, status: str) -> None:
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
            ev.AGENT_ENDED,
            agent_id=agent.id,
            task_id=agent.task_id,
            status=status,
            steps=agent.steps,
            prompt_tokens=agent.prompt_tokens,
            completion_tokens=agent.completion_tokens,
        )
        self.agents.pop(agent.id, None)

    def on_llm_call(self, row: dict[str, Any]) -> None:
        """Client listener: token totals per agent and per session, and an event for the UIs."""
        p, c = row.get("prompt_tokens") or 0, row.get("completion_tokens") or 0
        self.prompt_tokens += p
        self.completion_tokens += c
        agent = self.agents.get(row.get("agent_id") or "")
        if agent is not None:
            agent.prompt_tokens += p
            agent.completion_tokens += c
        self.emit(
            ev.LLM_CALL,
            agent_id=row.get("agent_id"),
            role=row["role"],
            prompt_tokens=p,
            completion_tokens=c,
            latency_ms=row.get("latency_ms"),
            error=row.get("error"),
        )

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
