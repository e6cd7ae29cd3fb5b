"""The parallel slots of a llama.cpp endpoint, shared by every agent of a session.

Why: llama-server keeps each slot's last prompt in its KV cache and only processes the part of a new prompt that
differs. A worker's conversation grows by one step at a time, so when its next call lands on the same slot only
the new step is processed; when 25 agents rotate through 4 slots every call re-reads its whole prompt, and on
2 cores prompt processing (~90 tok/s) is most of a call's time. The pool therefore (1) never lets more calls run
at once than the endpoint has slots — a call that cannot get a slot waits here, where the wait is measured,
rather than in the server's queue — and (2) gives an agent the slot it used last when that slot is free, and
otherwise the free slot that has been idle longest (whose cached prompt is the least likely to be wanted).
The slot id goes to llama-server as ``id_slot``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio


@dataclass
class SlotLease:
    """One call's hold on a slot: which one, how long the call waited for it, whether it is the agent's own."""

    slot: int
    queue_ms: float
    reused: bool


class SlotPool:
    """``n`` slots; ``async with pool.lease(agent_id) as lease`` holds one for the length of a call."""

    def __init__(self, n: int) -> None:
        self.size = max(1, int(n))
        self._free: set[int] = set(range(self.size))
        self._last_used: dict[int, float] = dict.fromkeys(range(self.size), 0.0)
        self._owner: dict[str, int] = {}
        self._cond = anyio.Condition()

    @property
    def idle(self) -> int:
        """Slots nobody is calling on right now."""
        return len(self._free)

    @property
    def busy(self) -> int:
        return self.size - len(self._free)

    async def acquire(self, agent_id: str | None) -> SlotLease:
        started = time.perf_counter()
        async with self._cond:
            while not self._free:
                await self._cond.wait()
            own = self._owner.get(agent_id) if agent_id else None
            if own is not None and own in self._free:
                slot, reused = own, True
            else:
                slot, reused = min(self._free, key=lambda s: self._last_used[s]), False
            self._free.discard(slot)
            if agent_id:
                self._owner[agent_id] = slot
        return SlotLease(slot, (time.perf_counter() - started) * 1000, reused)

    def spare(self, key: str) -> SlotLease | None:
        """A free slot for an extra draw under ``key`` (an agent's second, third … concurrent call): the one
        ``key`` used last, else one no agent claims (its cache is nobody's); None when there is none, at once.
        Why not any free slot: taking a slot another agent claims would make its next call re-read its whole
        prompt, which costs more than the extra draw gains."""
        own = self._owner.get(key)
        if own is None or own not in self._free:
            claimed = set(self._owner.values())
            unclaimed = [s for s in self._free if s not in claimed]
            if not unclaimed:
                return None
            own = min(unclaimed, key=lambda s: self._last_used[s])
            reused = False
        else:
            reused = True
        self._free.discard(own)
        self._owner[key] = own
        return SlotLease(own, 0.0, reused)

    def spares(self, key_prefix: str) -> int:
        """How many free slots :meth:`spare` could give keys starting with ``key_prefix`` right now."""
        claimed = {s for k, s in self._owner.items() if not k.startswith(key_prefix)}
        return sum(1 for s in self._free if s not in claimed)

    async def release(self, lease: SlotLease) -> None:
        async with self._cond:
            self._last_used[lease.slot] = time.monotonic()
            self._free.add(lease.slot)
            self._cond.notify()

    def forget(self, agent_id: str) -> None:
        """An agent that ended no longer claims its slot, nor the ones its extra draws used (``agent_id/k``)."""
        self._owner.pop(agent_id, None)
        helpers = [k for k in self._owner if k.startswith(agent_id + "/")]
        for k in helpers:
            del self._owner[k]

    def lease(self, agent_id: str | None) -> _Lease:
        return _Lease(self, agent_id)


class _Lease:
    def __init__(self, pool: SlotPool, agent_id: str | None) -> None:
        self.pool, self.agent_id = pool, agent_id
        self.held: SlotLease | None = None

    async def __aenter__(self) -> SlotLease:
        self.held = await self.pool.acquire(self.agent_id)
        return self.held

    async def __aexit__(self, *exc: object) -> None:
        if self.held is not None:
            with anyio.CancelScope(shield=True):
                await self.pool.release(self.held)
