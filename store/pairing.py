"""A worker's model call waits in the writer for the step it chose, so the two are stored as one ``calls`` row
(m016, see ``store.schema_m016``): one key, cell and header instead of two, the session and agent once, the
step's time a few bytes after the call's.

The call is held from its ``insert`` until its agent's next row: its step (then both go as one row), or
anything else (then the call goes alone, first, so an agent's rows keep their order). A call held longer than
:data:`HOLD_S` goes alone too, and :meth:`~.writer.Writer.flush` lets every held call go first. Only a worker's
call of its agent's task is held, with its times in milliseconds since the epoch, and only rows of the columns
the ``call_steps`` view takes are paired (anything else is written as it came).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

HOLD_S = 1.0
"""How long a call waits for its step at most (an action that runs the tests takes longer: its call goes
alone, its step to ``steps``)."""
AGENTS_KEPT = 16384
"""Agents whose task the writer remembers (a step pairs with its call only when it is its agent's task's)."""

CALL_KEYS = frozenset(
    [
        "seq",
        "id",
        "session_id",
        "agent_id",
        "role",
        "model",
        "endpoint",
        "schema_name",
        "request",
        "response",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "attempts",
        "error",
        "created_at",
        "parent_id",
        "kept",
        "queue_ms",
        "prompt_ms",
        "predicted_ms",
        "cached_tokens",
        "slot",
    ]
)
STEP_KEYS = frozenset(
    [
        "session_id",
        "agent_id",
        "task_id",
        "step",
        "name",
        "arguments",
        "observation",
        "exit_code",
        "duration_ms",
        "created_at",
        "target",
        "error",
    ]
)
SHARED_KEYS = frozenset({"session_id", "agent_id", "task_id"})
"""The step's keys its call's row already says (its task is its agent's)."""


class Pairs:
    """The calls held for their steps, and each agent's task. Thread-safe (producers insert; the writer's
    thread lets calls held too long go): a call that goes alone goes to ``alone`` while the lock is held, so
    its agent's next row, its step included, is queued after it."""

    def __init__(self, alone: Callable[[dict[str, Any]], None]) -> None:
        self._alone = alone
        self._held: dict[str, tuple[dict[str, Any], float]] = {}
        self._tasks: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def agent_started(self, row: dict[str, Any]) -> None:
        self._tasks[row["id"]] = row.get("task_id")
        if len(self._tasks) > AGENTS_KEPT:
            self._tasks.pop(next(iter(self._tasks)))

    def hold(self, row: dict[str, Any]) -> bool:
        """Whether this ``llm_calls`` row waits for its step (its agent's earlier call goes now)."""
        agent = row.get("agent_id")
        if not agent:
            return False
        with self._lock:
            earlier = self._held.pop(agent, None)
            if earlier is not None:
                self._alone(earlier[0])
            if (
                row.get("role") != "worker"
                or agent not in self._tasks
                or not isinstance(row.get("created_at"), int)
                or not CALL_KEYS.issuperset(row)
            ):
                return False
            self._held[agent] = (row, time.monotonic())
            return True

    def release(self, agent: str | None = None, *, older_than: float | None = None) -> None:
        """Let the held call of ``agent`` go; else those held longer than ``older_than`` seconds; else all."""
        if not self._held:
            return
        with self._lock:
            if agent is not None:
                held = self._held.pop(agent, None)
                if held is not None:
                    self._alone(held[0])
                return
            limit = time.monotonic() - older_than if older_than is not None else None
            while self._held:
                first = next(iter(self._held))
                if limit is not None and self._held[first][1] > limit:
                    break
                self._alone(self._held.pop(first)[0])

    def step(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """For an ``actions`` row: its agent's held call when the two make one row (else that call goes now)."""
        agent = row.get("agent_id")
        if not agent or not self._held:
            return None
        with self._lock:
            held = self._held.pop(agent, None)
            if held is None:
                return None
            if (
                STEP_KEYS.issuperset(row)
                and isinstance(row.get("created_at"), int)
                and row.get("task_id") == self._tasks.get(agent, "")
                and row.get("step") is not None
            ):
                return held[0]
            self._alone(held[0])
            return None


def paired(call: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """The ``call_steps`` row of a call and its step: the call's columns, then the step's as ``step_*``."""
    row = dict(call)
    for key, value in step.items():
        if key not in SHARED_KEYS:
            row[f"step_{key}"] = value
    return row
