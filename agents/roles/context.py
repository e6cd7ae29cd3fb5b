"""What a role (planner, worker, judge) works with: its task, its handoff, and the small seam to the session.

Roles never see the engine. They get a :class:`RoleContext`: the settings, the goal and notes, a repository map,
ways to queue work and hand results back, and the two halves of the record they may change (:class:`Ledger`
for tasks and agents, :class:`Recorder` for what they announce). The session implements these protocols;
tests can implement them too.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..status import AgentStatus, TaskKind, TaskStatus

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ..git.gate import Gate
    from ..git.workspace import SessionRepo
    from ..model.client import ModelClient
    from ..settings import Settings
    from ..tools.check import CheckSpec


@dataclass
class Task:
    id: str
    cycle_id: str
    kind: TaskKind
    title: str
    parent_id: str | None = None
    depth: int = 0
    instructions: str = ""
    files: list[str] = field(default_factory=list)
    check: str = ""
    status: TaskStatus = TaskStatus.PENDING
    attempts: int = 0


@dataclass
class Handoff:
    """What a worker (or a sub-planner) sends back to the planner that made its task."""

    task_id: str
    title: str
    status: TaskStatus  # done | failed
    summary: str
    notes: str = ""
    commit: str | None = None
    files: tuple[str, ...] = ()
    """The paths the landed commit changed (empty: not known): what landed, whatever the plan said."""

    @property
    def done(self) -> bool:
        return self.status == TaskStatus.DONE

    def as_prompt(self) -> dict[str, str]:
        return {"status": self.status, "title": self.title, "summary": self.summary, "notes": self.notes}


@dataclass
class Landed:
    """One task whose work is on the shared branch: planners are shown it and never plan it again."""

    title: str
    files: list[str] = field(default_factory=list)
    commit: str = ""


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


class Ledger(Protocol):
    """Tasks and agents: every change is recorded and announced."""

    def new_task(
        self, cycle_id: str, kind: TaskKind, title: str, parent: Task | None = None, **fields: Any
    ) -> Task: ...
    def start_task(self, task: Task) -> None: ...
    def requeue_task(self, task: Task, error: str) -> None: ...
    def end_task(
        self, task: Task, status: TaskStatus, *, error: str | None = None, handoff: Handoff | None = None
    ) -> None: ...
    def start_agent(self, role: str, task: Task | None, model: str, cycle_id: str | None) -> Agent: ...
    def end_agent(self, agent: Agent, status: AgentStatus) -> None: ...
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
    ) -> None: ...


class Recorder(Protocol):
    """What roles announce on the timeline (each with its row where it has one)."""

    writer: Any
    """The store writer, handed on to integration for its ``commits`` rows."""

    def status(self, message: str) -> None: ...
    def redact(self, text: str) -> str:
        """``text`` with secrets replaced, before it goes into a prompt (an observation of ``cat .env``)."""
        ...

    def warning(self, message: str, *, agent_id: str | None = None, task_id: str | None = None) -> None: ...
    def plan(
        self, agent_id: str, task_id: str, *, tasks: list[str], subplanners: list[str], scratchpad: str
    ) -> None: ...
    def conflict(self, agent_id: str, task_id: str, paths: list[str], round: int | None) -> None: ...
    def action(
        self,
        agent: Agent,
        task_id: str,
        step: int,
        name: str,
        args: dict[str, Any],
        text: str,
        exit_code: int | None,
        duration_ms: float,
        *,
        target: str,
        error: bool,
    ) -> None: ...
    def verdict(
        self,
        agent_id: str,
        cycle_id: str,
        number: int,
        *,
        decision: str,
        reason: str,
        notes: str,
        check_output: str,
        check_exit: int | None,
        start_exit: int | None = None,
    ) -> None: ...


class RoleContext(Protocol):
    """The session as a role sees it."""

    settings: Settings
    goal: str
    verdict_notes: str
    scratchpad: str
    cycle_number: int
    git: SessionRepo
    client: ModelClient
    check: CheckSpec | None
    """The landing gate's check (None: the parse gate only)."""
    gate: Gate | None
    ledger: Ledger
    recorder: Recorder
    workers: int
    """Workers that may run at once."""
    workers_busy: int
    """Workers running or about to start: the workers that may call the model at any moment."""
    landed: list[Landed]
    """Tasks of this session whose work is on the shared branch."""
    already_written: list[str]
    """Functions a plan wanted added that the code already has (``name() in path``): planners are told."""

    async def repo_map(self, max_age: float = 0.0) -> str: ...
    async def tip_check(self) -> tuple[int | None, str] | None:
        """The check's (exit code, output) on the shared tip, run once per tip; None without a check."""
        ...

    def checked(self, tip: str) -> tuple[int | None, str] | None:
        """The check's result on ``tip`` if it was run there (no new run)."""
        ...

    def take_steering(self) -> str: ...
    def set_scratchpad(self, text: str) -> None: ...
    def task_budget_left(self) -> int: ...
    def add_work(self, task: Task) -> None:
        """Queue a new work task (it counts against the cycle's task budget)."""
        ...

    async def deliver(self, handoff: Handoff) -> None:
        """Send a handoff to the planner that made the task (if it still listens)."""
        ...

    def inbox(self, task_id: str) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[Handoff]]:
        """While open, handoffs for ``task_id``'s children arrive here."""
        ...


def check_command(ctx: RoleContext) -> str:
    """The session's check: the landing gate's (configured, ``--check`` or detected), else the config's."""
    if ctx.check is not None:
        return ctx.check.command
    return ctx.settings.check_command
