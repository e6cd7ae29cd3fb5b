"""What a session screen shows, as frozen views: built by :mod:`.follow` on its thread, applied by the UI.

Nothing here imports Textual or the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..agents.status import SessionStatus
from .loglines import LogChunk

ENDED = (SessionStatus.DONE, SessionStatus.STOPPED, SessionStatus.FAILED)


def ts(value: str | None) -> float | None:
    """An ISO timestamp from the store as epoch seconds."""
    return datetime.fromisoformat(value).timestamp() if value else None


@dataclass(frozen=True, slots=True)
class CycleView:
    id: str
    number: int
    reason: str
    status: str


@dataclass(frozen=True, slots=True)
class TaskView:
    id: str
    cycle_id: str
    parent_id: str | None
    kind: str
    depth: int
    title: str
    status: str
    attempts: int
    agent_id: str | None = None
    """The agent that worked it last (its log is shown when the task is highlighted)."""
    done: int = 0
    """Work tasks finished in this subtree (itself included)."""
    total: int = 0
    gate: str = ""
    """The landing gate's last verdict on this task's work (passed, refused), empty before it was gated."""
    refusals: int = 0


@dataclass(frozen=True, slots=True)
class AgentView:
    id: str
    role: str
    name: str
    task_id: str | None
    task_title: str
    status: str
    step: int
    last_action: str
    prompt_tokens: int
    completion_tokens: int
    started_at: float | None
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class VerdictView:
    cycle: int
    decision: str
    reason: str
    notes: str


@dataclass(frozen=True, slots=True)
class StatusView:
    goal: str = ""
    repo: str = ""
    session_status: str = SessionStatus.RUNNING
    stop_reason: str | None = None
    cycle: int = 0
    paused: bool = False
    workers: int | None = None
    sandbox: str | None = None
    check: str | None = None
    """The landing gate's check, described."""
    gate_refusals: int = 0
    gate_seconds: float = 0.0
    """Time spent deciding landings (check runs included), summed over tasks."""
    warning: str | None = None
    running: int = 0
    pending: int = 0
    done: int = 0
    failed: int = 0
    commits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    endpoint_calls: tuple[tuple[str, int], ...] = ()
    """(endpoint, model calls) per server the session's calls went to, in first-use order."""

    @property
    def ended(self) -> bool:
        return self.session_status in ENDED


@dataclass(slots=True)
class Delta:
    """What changed since the last delta; the first one (``initial``) holds everything."""

    seq: int
    status: StatusView
    initial: bool = False
    reset_agents: bool = False
    cycles: list[CycleView] = field(default_factory=list)
    tasks: list[TaskView] = field(default_factory=list)
    agents: list[AgentView] = field(default_factory=list)
    verdicts: list[VerdictView] = field(default_factory=list)
    commit_times: list[float] = field(default_factory=list)
    lines: dict[str, list[LogChunk]] = field(default_factory=dict)
    notices: list[tuple[str, str]] = field(default_factory=list)
    """(severity, message) pairs worth a toast: warnings, the end of the session."""
