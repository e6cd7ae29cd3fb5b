"""In-memory bookkeeping of a running session: its tasks, its agents and its counters.

Every change that matters to the record goes through :class:`~.record.Record` (row and event together), so the
engine, planners and workers change a task or an agent only through :class:`SessionState` (the roles' ledger).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...store.db import new_id
from ..roles.context import Agent, Handoff, Task
from ..status import WORK_STATUSES, AgentStatus, TaskKind, TaskStatus
from .record import Record


@dataclass
class ResumeCycle:
    """What recovery found of the last cycle: its pending work and whether its planning had finished."""

    cycle_id: str
    number: int
    pending: list[dict[str, Any]]
    """The ``tasks`` rows of its work still to do."""
    planned: bool


class SessionState:
    """Tasks, agents and counters of one session; every change is written and published through ``record``."""

    def __init__(self, record: Record, on_agent_end: Callable[[str], None] | None = None) -> None:
        self.record = record
        self.on_agent_end = on_agent_end  # the model client forgets the agent's slot
        self.session_id = record.session_id
        self.tasks: dict[str, Task] = {}
        self.agents: dict[str, Agent] = {}
        self.commits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.started = time.monotonic()

    # -- tasks -------------------------------------------------------------------------------------

    def add_task(self, task: Task) -> Task:
        self.tasks[task.id] = task
        self.record.task_created(task)
        return task

    def new_task(
        self, cycle_id: str, kind: TaskKind, title: str, parent: Task | None = None, **fields: Any
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
        task.status = TaskStatus.RUNNING
        task.attempts += 1
        self.record.task_started(task)

    def requeue_task(self, task: Task, error: str) -> None:
        task.status = TaskStatus.PENDING
        self.record.task_requeued(task, error)

    def park_task(self, task: Task) -> None:
        """Back to pending without news (a stopped session; ``formicary resume`` picks it up)."""
        task.status = TaskStatus.PENDING
        self.record.task_row(task.id, TaskStatus.PENDING)

    def end_task(
        self, task: Task, status: TaskStatus, *, error: str | None = None, handoff: Handoff | None = None
    ) -> None:
        task.status = status
        self.record.task_ended(task, status, error=error, handoff=handoff)

    def counts(self) -> dict[TaskStatus, int]:
        c = Counter(t.status for t in self.tasks.values() if t.kind == TaskKind.WORK)
        return {s: c.get(s, 0) for s in WORK_STATUSES}

    # -- agents ------------------------------------------------------------------------------------

    def start_agent(self, role: str, task: Task | None, model: str, cycle_id: str | None) -> Agent:
        agent_id = new_id()
        agent = Agent(
            id=agent_id, role=role, name=f"{role}-{agent_id[-6:].lower()}", task_id=task.id if task else None
        )
        self.agents[agent_id] = agent
        self.record.agent_started(agent, model, cycle_id)
        return agent

    def end_agent(self, agent: Agent, status: AgentStatus) -> None:
        self.record.agent_ended(agent, status)
        self.agents.pop(agent.id, None)
        if self.on_agent_end is not None:
            self.on_agent_end(agent.id)

    def landed(
        self,
        agent: Agent,
        task: Task,
        *,
        sha: str,
        integrated_sha: str | None,
        retries: int,
        conflicts: int,
        refusals: int = 0,
        gate_ms: float = 0.0,
    ) -> None:
        """A task's commit is on the shared branch."""
        self.commits += 1
        self.record.commit_landed(
            agent.id,
            task.id,
            sha=sha,
            integrated_sha=integrated_sha,
            retries=retries,
            conflicts=conflicts,
            refusals=refusals,
            gate_ms=gate_ms,
            title=task.title,
        )

    def on_llm_call(self, row: dict[str, Any]) -> None:
        """Client listener: token totals per agent and per session, and an event for the UIs."""
        p, c = row.get("prompt_tokens") or 0, row.get("completion_tokens") or 0
        self.prompt_tokens += p
        self.completion_tokens += c
        agent = self.agents.get(row.get("agent_id") or "")
        if agent is not None:
            agent.prompt_tokens += p
            agent.completion_tokens += c
        self.record.llm_call(row, p, c)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
