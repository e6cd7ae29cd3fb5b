"""The board of one cycle: queued work, worker slots, the scheduler, planners' inboxes and the cycle's handoffs.

Tasks flow one way: planners queue work here, the scheduler starts a worker for each while a slot is free and the
session is not paused, and each handoff goes to the inbox of the planner that made its task. Nothing on the
board waits on an agent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..roles.context import Handoff, Task

INBOX_SIZE = 10_000


class Board:
    """Queue, slots and inboxes; reset at the start of every cycle."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        """Workers at once (the operator may change it while the session runs)."""
        self.paused = False
        self.running = 0
        """Workers running now."""
        self.tasks_created = 0
        """Work tasks planned this cycle (the cycle's task budget counts these)."""
        self.handoffs: list[Handoff] = []
        """What this cycle's tasks handed back, for the judge."""
        self._queue: deque[Task] = deque()
        self._inboxes: dict[str, MemoryObjectSendStream[Handoff]] = {}
        self._wake: anyio.Event | None = None

    @property
    def busy(self) -> int:
        """Workers running now plus queued tasks a free worker slot is about to start (at most ``workers``):
        the workers that may call the model at any moment."""
        return min(self.workers, self.running + len(self._queue))

    def new_cycle(self) -> None:
        self.handoffs = []
        self.tasks_created = 0
        self._queue.clear()

    def poke(self) -> None:
        """Wake the scheduler: a task was queued, a slot freed, or the session resumed."""
        if self._wake is not None:
            self._wake.set()

    def enqueue(self, task: Task) -> None:
        self._queue.append(task)
        self.poke()

    async def schedule(self, work: Callable[[Task], Awaitable[Handoff | None]], group: Any) -> None:
        """Run ``work(task)`` in ``group`` for each queued task while a slot is free; runs until cancelled.

        ``work`` returns the task's handoff (delivered to its planner) or None to queue the task again.
        """

        async def slot(task: Task) -> None:
            try:
                handoff = await work(task)
            finally:
                self.running -= 1
                self.poke()
            if handoff is None:  # requeued for another attempt
                self.enqueue(task)
                return
            self.handoffs.append(handoff)
            await self.deliver(handoff, task.parent_id)

        while True:
            self._wake = anyio.Event()
            while self._queue and self.running < self.workers and not self.paused:
                task = self._queue.popleft()
                self.running += 1
                group.start_soon(slot, task)
            await self._wake.wait()

    @asynccontextmanager
    async def inbox(
        self, task_id: str, size: int = INBOX_SIZE
    ) -> AsyncIterator[MemoryObjectReceiveStream[Handoff]]:
        """Handoffs for the children of ``task_id`` arrive on the stream while this is open."""
        send, receive = anyio.create_memory_object_stream[Handoff](size)
        self._inboxes[task_id] = send
        try:
            yield receive
        finally:
            if self._inboxes.get(task_id) is send:
                del self._inboxes[task_id]
            send.close()

    async def deliver(self, handoff: Handoff, parent_id: str | None) -> None:
        inbox = self._inboxes.get(parent_id or "")
        if inbox is not None:
            await inbox.send(handoff)

    @asynccontextmanager
    async def shared_inbox(
        self, parents: set[str], size: int
    ) -> AsyncIterator[MemoryObjectReceiveStream[Handoff]]:
        """One stream for the handoffs of several parents (a resumed cycle has no planner listening)."""
        send, receive = anyio.create_memory_object_stream[Handoff](size)
        for parent in parents:
            self._inboxes[parent] = send
        try:
            yield receive
        finally:
            for parent in parents:
                self._inboxes.pop(parent, None)
