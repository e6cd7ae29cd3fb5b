"""Instruments for ``bench/efficiency.py``: CPU from /proc, lock waits, and a probe of the engine's events and steps.

Everything here observes the real engine from outside (event listeners, wrapped methods); nothing changes what
the engine does.
"""

from __future__ import annotations

import os
import statistics
import time
from collections import defaultdict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from formicary.agents.git import repo_map
from formicary.agents.git import run as git_ops
from formicary.agents.session import events as ev
from formicary.agents.status import TaskKind, TaskStatus

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int | str, tid: int | None = None) -> float:
    """CPU seconds (user + system) of a process, or of one of its threads, from /proc."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat), to see who else ran."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


class TimedLock:
    """Wraps an ``anyio.Lock``: how long callers waited for it and how long they held it."""

    def __init__(self, inner: anyio.Lock) -> None:
        self.inner = inner
        self.waits: list[tuple[float, float]] = []  # (acquired at, waited s)
        self.holds: list[tuple[float, float]] = []
        self._acquired = 0.0

    async def __aenter__(self) -> None:
        t0 = time.monotonic()
        await self.inner.acquire()
        self._acquired = time.monotonic()
        self.waits.append((self._acquired, self._acquired - t0))

    async def __aexit__(self, *exc: object) -> None:
        now = time.monotonic()
        self.holds.append((now, now - self._acquired))
        self.inner.release()


class Probe:
    """Listens to the engine's events and times the git steps of every task (monotonic clock)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.done: list[tuple[float, str]] = []
        self.calls: list[tuple[float, float]] = []  # (at, latency ms)
        self.phases: dict[str, list[tuple[float, float]]] = defaultdict(list)  # name -> (at, seconds)
        self.git: dict[str, list[float]] = defaultdict(list)  # subcommand -> end times
        self.git_wall: dict[str, float] = defaultdict(float)
        self.lag: list[tuple[float, float]] = []
        self.task_of: dict[str, str] = {}  # agent -> task
        self.model_s: dict[str, float] = defaultdict(float)  # task -> seconds its calls took (client side)
        self.call_spans: dict[str, list[tuple[float, float]]] = defaultdict(list)  # task -> (start, end)

    def __call__(self, event: ev.Event) -> None:
        t = time.monotonic()
        if isinstance(event, ev.TaskStarted) and event.task_kind == TaskKind.WORK:
            self.started[event.task_id] = t
        elif (
            isinstance(event, ev.TaskEnded)
            and event.status == TaskStatus.DONE
            and event.task_id in self.started
        ):
            self.done.append((t, event.task_id))
        elif isinstance(event, ev.AgentStarted) and event.task_id:
            self.task_of[event.agent_id] = event.task_id
        elif isinstance(event, ev.LlmCall):
            ms = event.latency_ms or 0.0
            self.calls.append((t, ms))
            task = self.task_of.get(event.agent_id or "", "")
            self.model_s[task] += ms / 1000
            self.call_spans[task].append((t - ms / 1000, t))

    def first_wave(self, workers: int) -> bool:
        """True while fewer than ``workers`` worktrees have been made (``git worktree add``): a reused
        worktree's next task counts for nothing, so early finishers cannot end the first wave early."""
        return len(self.git["worktree add"]) < workers

    def whole_periods(self, t0: float, window: float) -> float:
        """``window`` stretched to a whole number of mean task durations since ``t0``.

        Why: with a fixed latency the tasks that started together keep finishing in waves one task duration
        apart; a window of whole periods counts each wave once wherever it starts.
        """
        durations = [t - self.started[task] for t, task in self.done if t >= t0]
        if not durations:
            return window
        period = statistics.mean(durations)
        return max(1, -(-window // period)) * period

    def timed(self, name: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.phases[name].append((time.monotonic(), time.monotonic() - t0))

        return wrapper

    def timed_cm(self, fn: Any) -> Any:
        @asynccontextmanager
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.monotonic()
            async with fn(*args, **kwargs) as value:
                self.phases["worktree_setup"].append((time.monotonic(), time.monotonic() - t0))
                try:
                    yield value
                finally:
                    t1 = time.monotonic()
            self.phases["worktree_release"].append((time.monotonic(), time.monotonic() - t1))

        return wrapper

    def count_git(self) -> None:
        """Count every git process the engine starts, by subcommand (git_ops and the repo map's own)."""
        orig_run, orig_map = git_ops._run, repo_map._git

        async def run(args: tuple[str, ...], *rest: Any) -> Any:
            t0 = time.monotonic()
            try:
                return await orig_run(args, *rest)
            finally:
                self._git_done(args, t0)

        async def map_git(repo: Path, *args: str) -> str:
            t0 = time.monotonic()
            try:
                return await orig_map(repo, *args)
            finally:
                self._git_done(("map:" + args[0],), t0)

        git_ops._run, repo_map._git = run, map_git  # type: ignore[assignment]

    def _git_done(self, args: tuple[str, ...], t0: float) -> None:
        words = [a for a in args if not a.startswith("-") and "=" not in a]
        key = " ".join(words[:2]) if words[0] == "worktree" else words[0]
        now = time.monotonic()
        self.git[key].append(now)
        self.git_wall[key] += now - t0

    async def sample_lag(self, every: float = 0.05) -> None:
        """Event-loop lag: how late a short sleep wakes up (a saturated loop wakes late)."""
        while True:
            t0 = time.monotonic()
            await anyio.sleep(every)
            self.lag.append((time.monotonic(), time.monotonic() - t0 - every))


def quantiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        v = values[0] if values else 0.0
        return v, v, v
    q = statistics.quantiles(values, n=100)
    return statistics.median(values), q[94], q[98]


def lock_stats(lock: TimedLock, t0: float, t1: float, window: float) -> dict[str, Any]:
    waits = [w for t, w in lock.waits if t0 <= t < t1]
    holds = [h for t, h in lock.holds if t0 <= t < t1]
    return {
        "acquires_per_s": round(len(waits) / window, 1),
        "wait_p50_ms": round(quantiles(waits)[0] * 1000, 1),
        "wait_p95_ms": round(quantiles(waits)[1] * 1000, 1),
        "busy": round(sum(holds) / window, 3),  # share of the window the lock was held
    }
