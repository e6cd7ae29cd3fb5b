"""The statuses and kinds every layer and every UI shares, as StrEnums.

A base module (like :mod:`settings` and :mod:`paths`): roles, the session and the TUI all name the same states,
so they are defined once, below all of them. Members are ``str``, so they are stored and compared as the plain
strings the record has always held; a consumer's ``match`` on them is checked by the type checker.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUED = "requeued"
    """Only in ``task_ended`` events: the task went back to pending for another attempt."""


class TaskKind(StrEnum):
    PLANNER = "planner"
    SUBPLANNER = "subplanner"
    WORK = "work"


class Role(StrEnum):
    PLANNER = "planner"
    SUBPLANNER = "subplanner"
    WORKER = "worker"
    JUDGE = "judge"


class AgentStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CycleStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    ABANDONED = "abandoned"


class CycleReason(StrEnum):
    START = "start"
    CONTINUE = "continue"
    FRESH = "fresh"
    RESUME = "resume"


class SessionStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in (SessionStatus.DONE, SessionStatus.STOPPED, SessionStatus.FAILED)


class Decision(StrEnum):
    CONTINUE = "continue"
    DONE = "done"


class Control(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    FRESH = "fresh"
    STOP = "stop"
    STEER = "steer"
    WORKERS = "workers"


WORK_STATUSES = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.DONE,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
)
"""The statuses a work task's row can hold, in the order counts are shown."""
