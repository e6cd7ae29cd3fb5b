"""Endpoint pools: a role's calls go to the least-loaded healthy server it names, within each server's cap.

An :class:`Endpoint` is one server (its cap, its load, its health), shared by every role that names it, so one
cap holds across roles. A :class:`Pool` is one role's list of endpoints and the calls waiting for a slot, handed
a slot in arrival order as soon as one frees (no thundering herd: a release wakes one waiter).

Health: a server that refuses connections is taken out at once; one whose calls fail three times in a row is
taken out when its pool has others to use. Taken-out servers are probed with growing intervals (doubled for
one that flaps) by a caller of the pool — ``GET /models`` when nothing listened (after restarting the embedded
llama-server if it died), a one-token chat request when its calls failed — and put back when they answer. When no server of a pool is up, its calls wait — the operator is told "waiting for the model endpoint
…" — until one answers again or ``outage_limit`` seconds pass, which ends the session with one line.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from .errors import EndpointError, Kind, one_line

FAILURES_TO_EJECT = 3
"""Consecutive failed calls that take a server out of a pool that has others."""
PROBE_FIRST = 0.5
PROBE_MAX = 5.0
PROBE_TIMEOUT = 2.0
FLAP_WINDOW = 30.0
"""A server taken out again within this many seconds of coming back waits twice as long for its next probe."""


class AdaptiveLimiter:
    """A server's cap: halves on a 429/503 burst and creeps back up after successes (AIMD)."""

    __slots__ = ("ceiling", "limit", "_successes", "_last_cut")

    def __init__(self, limit: int) -> None:
        self.ceiling = self.limit = limit
        self._successes = 0
        self._last_cut = 0.0

    def throttled(self) -> None:
        now = time.monotonic()
        if now - self._last_cut > 1.0 and self.limit > 1:  # one cut per burst, not per rejected call
            self.limit = max(1, self.limit // 2)
            self._last_cut = now
        self._successes = 0

    def succeeded(self) -> None:
        self._successes += 1
        if self.limit < self.ceiling and self._successes >= self.limit * 4:
            self.limit += 1
            self._successes = 0


class Endpoint:
    """One server: where it is, its cap and load, whether it is up, and what it has done."""

    def __init__(self, url: str, key: str, limit: int) -> None:
        self.url, self.key = url, key
        """``url`` is '' for a provider litellm reaches by itself (never probed, never taken out)."""
        self.cap = AdaptiveLimiter(limit)
        self.in_flight = 0
        self.calls = 0
        self.failed_calls = 0
        self.streak = 0
        self.up = True
        self.up_since = -FLAP_WINDOW
        self.probe_listing = True
        self.down_since = 0.0
        self.next_probe = 0.0
        self.probe_every = PROBE_FIRST
        self.last_error = ""
        self.pools: list[Pool] = []
        self.sdk: list[Any] = []
        """The openai SDK clients for this server (each its own connection pool), made by the client."""
        self.revive: Callable[[], Awaitable[object]] | None = None
        """Restarts the server if its process died (the embedded llama-server); run before each probe."""

    @property
    def label(self) -> str:
        return self.url or "the provider's endpoint"

    def mark_down(self, reason: str, refused: bool = True) -> None:
        """Take the server out; ``refused``: nothing listened (else its calls kept failing)."""
        if not self.url:
            return
        self.last_error = reason
        if not self.up:
            return
        self.up = False
        self.probe_listing = refused  # else it listens: probe it with a real (one-token) call
        now = time.monotonic()
        # out again soon after it was let back in: wait longer before the next probe
        flapping = now - self.up_since < FLAP_WINDOW
        self.probe_every = min(PROBE_MAX, self.probe_every * 2) if flapping else PROBE_FIRST
        self.down_since = now
        self.next_probe = now + self.probe_every
        shared = [p for p in self.pools if len(p.members) > 1]
        if shared:  # others take its calls meanwhile
            shared[0].notify(f"model endpoint {self.label} taken out of its pool: {reason}")
        for pool in self.pools:
            pool.member_down(self)

    def mark_up(self) -> None:
        self.streak = 0
        if self.up:
            return
        self.up = True
        self.up_since = time.monotonic()
        shared = [p for p in self.pools if len(p.members) > 1]
        if shared:
            shared[0].notify(f"model endpoint {self.label} is back in its pool")
        for pool in self.pools:
            pool.member_up(self)

    def abandoned(self) -> None:
        """A call given up by its caller (cancelled): its slot frees, nothing is learned about the server."""
        self.in_flight -= 1
        for pool in self.pools:
            pool.dispatch()

    def finished(self, failure: Kind | None, reason: str = "") -> None:
        """Account one call that ended; ``failure`` is its kind, None on success."""
        self.in_flight -= 1
        self.calls += 1
        if failure is None:
            self.cap.succeeded()
            self.mark_up()
        else:
            self.failed_calls += 1
            if failure is Kind.BUSY:
                self.cap.throttled()
            elif failure is Kind.DOWN:
                self.mark_down(reason)
            elif failure is Kind.TRANSIENT:
                self.streak += 1
                if self.streak >= FAILURES_TO_EJECT and any(len(p.members) > 1 for p in self.pools):
                    self.mark_down(f"{self.streak} failed calls in a row, the last: {reason}", refused=False)
        for pool in self.pools:
            pool.dispatch()


class _Waiter:
    __slots__ = ("event", "endpoint", "error")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.endpoint: Endpoint | None = None
        self.error: EndpointError | None = None


Notify = Callable[[str], None]
Probe = Callable[[Endpoint, str], Awaitable[bool]]


class Pool:
    """One role's servers and the calls waiting for a slot on one of them."""

    def __init__(
        self,
        role: str,
        members: list[tuple[Endpoint, str]],
        *,
        outage_limit: float,
        probe: Probe,
        notify: Notify,
    ) -> None:
        self.role = role
        self.members = [endpoint for endpoint, _ in members]
        self.models = {id(endpoint): model for endpoint, model in members}
        self.outage_limit = outage_limit
        self._probe_fn, self.notify = probe, notify
        self._waiters: deque[_Waiter] = deque()
        self._probing = False
        self._outage_since: float | None = None
        self._announced = False
        for endpoint in self.members:
            endpoint.pools.append(self)

    @property
    def label(self) -> str:
        return ", ".join(e.label for e in self.members)

    def model(self, endpoint: Endpoint) -> str:
        return self.models[id(endpoint)]

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    # -- taking and handing out slots --------------------------------------------------------------

    def _pick(self) -> Endpoint | None:
        """The up server with the most room (lowest share of its cap in use), or None if all are full."""
        best, best_load = None, 1.0
        for endpoint in self.members:
            if endpoint.up:
                limit = endpoint.cap.limit
                if endpoint.in_flight < limit:
                    load = endpoint.in_flight / limit
                    if best is None or load < best_load:
                        best, best_load = endpoint, load
        return best

    def dispatch(self) -> None:
        """Hand free slots to waiting calls, first come first served."""
        waiters = self._waiters
        while waiters:
            endpoint = self._pick()
            if endpoint is None:
                return
            waiter = waiters.popleft()
            endpoint.in_flight += 1
            waiter.endpoint = endpoint
            waiter.event.set()

    async def acquire(self) -> Endpoint:
        """A slot on the best server; waits while all are full or down (then probes them).

        Raises:
            EndpointError: no server of the pool answered for ``outage_limit`` seconds.
        """
        if not self._probing and self._probe_due():
            self._probing = True
            try:
                await self._probe_round()
            finally:
                self._probing = False
        if not self._waiters:
            endpoint = self._pick()
            if endpoint is not None:
                endpoint.in_flight += 1
                return endpoint
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            self.dispatch()
            while waiter.endpoint is None:
                if waiter.error is not None:
                    raise waiter.error
                if not self._probing and self._outage_since is not None:
                    await self._lead_outage(waiter)
                else:
                    await waiter.event.wait()
                    if waiter.endpoint is None and waiter.error is None:
                        waiter.event = anyio.Event()  # woken to take over probing
            return waiter.endpoint
        except BaseException:
            if waiter.endpoint is not None:  # handed a slot as it was cancelled: give it back
                waiter.endpoint.in_flight -= 1
                for pool in waiter.endpoint.pools:
                    pool.dispatch()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    # -- health ------------------------------------------------------------------------------------

    def member_down(self, endpoint: Endpoint) -> None:
        if self._outage_since is None and not any(e.up for e in self.members):
            self._outage_since = time.monotonic()  # announced once a call of this role waits for it

    def member_up(self, endpoint: Endpoint) -> None:
        if self._outage_since is not None:
            waited = time.monotonic() - self._outage_since
            self._outage_since = None
            if self._announced:
                self._announced = False
                self.notify(
                    f"model endpoint {endpoint.label} answers again after {waited:.0f}s; calls resume"
                )
        self.dispatch()

    def _probe_due(self) -> bool:
        now = time.monotonic()
        return any(not e.up and e.next_probe <= now for e in self.members)

    async def _probe_round(self) -> None:
        """Probe every taken-out server whose time has come (the caller holds ``_probing``)."""
        now = time.monotonic()
        for endpoint in self.members:
            if endpoint.up or endpoint.next_probe > now:
                continue
            endpoint.probe_every = min(PROBE_MAX, endpoint.probe_every * 1.5)
            endpoint.next_probe = now + endpoint.probe_every
            if await self._probe_fn(endpoint, self.model(endpoint)):
                endpoint.mark_up()

    async def _lead_outage(self, waiter: _Waiter) -> None:
        """No server is up: this waiter probes them until one answers, or fails every waiter at the limit."""
        self._probing = True
        if not self._announced:
            self._announced = True
            last = "; ".join(e.last_error for e in self.members if e.last_error)
            self.notify(
                f"waiting for the model endpoint of the {self.role} ({self.label}): {one_line(last, 160)}; "
                f"calls wait up to {self.outage_limit:.0f}s for it to answer"
            )
        try:
            while waiter.endpoint is None and waiter.error is None and self._outage_since is not None:
                if time.monotonic() - self._outage_since > self.outage_limit:
                    self._fail_all()
                    return
                await self._probe_round()
                if self._outage_since is None:
                    break
                wake = min(e.next_probe for e in self.members if not e.up)
                with anyio.move_on_after(max(0.05, wake - time.monotonic())):
                    await waiter.event.wait()
        finally:
            self._probing = False
            if waiter.endpoint is None and waiter.error is None and self._outage_since is not None:
                for other in self._waiters:  # hand the probing to the next waiting call
                    if other is not waiter:
                        other.event.set()
                        break

    def _fail_all(self) -> None:
        last = "; ".join(f"{e.label}: {e.last_error}" for e in self.members if e.last_error)
        error = EndpointError(
            f"no answer for {self.outage_limit:.0f}s (outage_limit), last error: {one_line(last, 300)}",
            role=self.role,
            endpoint=self.label,
        )
        while self._waiters:
            waiter = self._waiters.popleft()
            waiter.error = error
            waiter.event.set()
