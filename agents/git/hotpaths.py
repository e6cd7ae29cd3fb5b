"""Turns on hot paths: a task that lost a conflict round lands next on the paths it touched.

Without turns, a file many tasks edit starves them: while a worker resolves a conflict (several model calls),
another task lands on the same lines, so the resolution conflicts again, round after round, until the task
fails (seen: one task lost 9 rounds in a row with 30 tasks on one line). With turns, a task that conflicts on a
path queues for it; the first in a path's queue owns it, and a landing that would change a path owned by another
task is held (not merged, not counted as a conflict round) and queued behind it. The owner's next attempt then
merges onto a tip where its paths have not moved, and lands. When it lands or ends, the next in the queue owns
the path. Bounded: an owner that keeps a path longer than ``hold_s`` loses its turn (it queues again at the back),
so no task waits on another indefinitely. Paths no task conflicted on cost nothing: without turns the landing
step does no extra work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import anyio

HOLD_S = 120.0
"""How long one task may own a path: a conflict resolution is a few model calls; a stuck one must not block."""


class HotPaths:
    """Per-path queues of task ids; the first owns the path (since ``_since[path]``)."""

    def __init__(self, hold_s: float = HOLD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_s = hold_s
        self._clock = clock
        self._queues: dict[str, list[str]] = {}
        self._since: dict[str, float] = {}
        self._changed: anyio.Event | None = None

    def __bool__(self) -> bool:
        return bool(self._queues)

    def owner(self, path: str) -> str | None:
        queue = self._queues.get(path)
        return queue[0] if queue else None

    def claim(self, task_id: str, paths: Iterable[str]) -> None:
        """``task_id`` lost a conflict round on ``paths``: queue it for each (first in an empty queue owns it)."""
        now = self._clock()
        for path in paths:
            queue = self._queues.setdefault(path, [])
            if task_id not in queue:
                queue.append(task_id)
                if len(queue) == 1:
                    self._since[path] = now

    def owners(self) -> dict[str, str]:
        """Each path with a turn, and the task that has it now (a copy, for the landing's thread)."""
        self._expire()
        return {path: queue[0] for path, queue in self._queues.items() if queue}

    def blocked_until(self, task_id: str, paths: Iterable[str]) -> float | None:
        """When the turn of whoever holds one of ``paths`` ends, if another task holds one (and queue
        ``task_id`` behind it); None when ``task_id`` may land on all of them now."""
        self._expire()
        until: float | None = None
        for path in paths:
            queue = self._queues.get(path)
            if not queue or queue[0] == task_id:
                continue
            if task_id not in queue:
                queue.append(task_id)
            end = self._since[path] + self.hold_s
            until = end if until is None else min(until, end)
        return until

    def release(self, task_id: str) -> None:
        """``task_id``'s integration ended (landed, failed or cancelled): it leaves every queue."""
        changed = False
        now = self._clock()
        for path in list(self._queues):
            queue = self._queues[path]
            if task_id not in queue:
                continue
            was_owner = queue[0] == task_id
            queue.remove(task_id)
            changed = True
            if not queue:
                del self._queues[path]
                self._since.pop(path, None)
            elif was_owner:
                self._since[path] = now
        if changed:
            self._signal()

    async def wait(self, until: float) -> None:
        """Sleep until a turn changes hands or ``until`` (a :meth:`blocked_until` answer) passes."""
        if self._changed is None:
            self._changed = anyio.Event()
        with anyio.move_on_after(max(0.0, until - self._clock())):
            await self._changed.wait()

    def _expire(self) -> None:
        """An owner whose turn ran out goes to the back of its queue; the next one's turn starts."""
        now = self._clock()
        expired = False
        for path, queue in self._queues.items():
            if now - self._since[path] >= self.hold_s:
                queue.append(queue.pop(0))
                self._since[path] = now
                expired = True
        if expired:
            self._signal()

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
