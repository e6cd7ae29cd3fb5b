"""The state of one running session, and the :class:`~..roles.context.RoleContext` its roles see.

Everything the loop, the controls and the roles share lives here as public attributes, so no module reaches
into another's private ones: the engine (:mod:`.engine`) adds construction and the control API on top, the loop
(:mod:`.loop`) runs cycles over it, and planners, workers and the judge see only the RoleContext part.
"""

from __future__ import annotations

import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ..roles.context import Handoff, Landed, Task
from .board import Board
from .state import ResumeCycle, SessionState

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ...store.writer import Writer
    from ..git.gate import Gate
    from ..git.workspace import SessionRepo
    from ..model.client import ModelClient
    from ..model.server import EmbeddedServer
    from ..settings import Settings
    from ..tools.check import CheckSpec
    from .record import Record


class SessionContext:
    """One session's settings, goal, notes, board, record and resources (set up by the loop)."""

    def __init__(
        self,
        settings: Settings,
        repo: Path,
        goal: str,
        session_id: str,
        db_path: Path,
        *,
        resume: bool = False,
    ) -> None:
        self.settings = settings
        self.repo_path = repo
        self.goal = goal
        self.session_id = session_id
        self.db_path = db_path
        self.resuming = resume
        self.board = Board(settings.limits.workers)
        self.scratchpad = ""
        self.verdict_notes = ""
        self.steering: list[str] = []
        self.cycle_number = 0
        self.cycles_judged = 0
        self.cycle_id: str | None = None
        self.git: SessionRepo = None  # type: ignore[assignment]  # opened by Engine.prepare()
        self.writer: Writer | None = None
        self.state: SessionState = None  # type: ignore[assignment]  # set by the loop
        self.client: ModelClient = None  # type: ignore[assignment]  # set by the loop
        self.embedded: EmbeddedServer | None = None
        self.check: CheckSpec | None = None
        """The landing gate's check, chosen when the engine opens the repository."""
        self.check_source = "config"
        """Where the check came from: ``config``, or ``--check`` when the CLI set it."""
        self.gate: Gate | None = None
        self.listeners: list[Any] = []
        """Subscribers, attached to the record when the loop opens it."""
        self.stop_reason: str | None = None
        """Set once the session should stop (operator, budget); the loop ends at the next boundary."""
        self.cycle_scope: anyio.CancelScope | None = None
        """The running cycle's scope: a fresh start or a stop cancels it."""
        self.deadline = 0.0
        self._said_check_ran_nothing = False
        self.resume_branch: str | None = None
        """The session branch to reopen (resume only)."""
        self.resume_cycle: ResumeCycle | None = None
        """What recovery found of the last cycle (resume only)."""
        self._map_cache: tuple[str, str, float] | None = None  # tip, map, monotonic time it was read
        self._map_lock = anyio.Lock()
        self.landed: list[Landed] = []
        """Tasks whose work is on the shared branch (planners are shown them and never plan them again)."""
        self.already_written: list[str] = []
        """Functions a plan wanted added that the code already has (planners are told, see planner.py)."""
        self._tip_checks: dict[str, tuple[int | None, str]] = {}
        self._check_lock = anyio.Lock()

    @property
    def workers(self) -> int:
        return self.board.workers

    @property
    def workers_busy(self) -> int:
        return self.board.busy

    @property
    def paused(self) -> bool:
        return self.board.paused

    @property
    def record(self) -> Record:
        return self.state.record

    # -- what the roles see (RoleContext) ---------------------------------------------------------

    @property
    def ledger(self) -> SessionState:
        return self.state

    @property
    def recorder(self) -> Record:
        return self.state.record

    def add_work(self, task: Task) -> None:
        self.board.tasks_created += 1
        self.board.enqueue(task)

    async def deliver(self, handoff: Handoff) -> None:
        """Send a handoff to the planner that made the task (if it still listens)."""
        task = self.state.tasks.get(handoff.task_id)
        await self.board.deliver(handoff, task.parent_id if task else None)

    def inbox(self, task_id: str) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[Handoff]]:
        return self.board.inbox(task_id)

    def take_steering(self) -> str:
        text, self.steering = "\n".join(self.steering), []
        return text

    def set_scratchpad(self, text: str) -> None:
        self.scratchpad = text
        self.record.set_scratchpad(text)

    def task_budget_left(self) -> int:
        return self.settings.limits.tasks_per_cycle - self.board.tasks_created

    async def repo_map(self, max_age: float = 0.0) -> str:
        """The map of the shared branch's tip; a map of an older tip will do if it is under ``max_age`` s old.

        Why the age: the tip moves with every commit (10+ a second with hundreds of workers), so a cache per
        tip alone regenerates the map (three git processes) for nearly every worker that starts. Workers take
        a map a few seconds old (``worker.MAP_MAX_AGE``; their worktree is at the current tip anyway); planners
        ask for the current one. Concurrent callers share one regeneration.
        """
        from ..git.repo_map import repo_map

        if (cached := self._fresh_map(max_age)) is not None:
            return cached
        async with self._map_lock:
            if (cached := self._fresh_map(max_age)) is not None:
                return cached
            tip, read_at = self.git.shared.tip, time.monotonic()
            text = await repo_map(self.git.root, tip)
            self._map_cache = (tip, text, read_at)
        return text

    async def tip_check(self) -> tuple[int | None, str] | None:
        """The session's check on the shared tip, run once per tip (planners and the judge share it); None when
        there is no check."""
        command = self.check.command if self.check is not None else self.settings.check_command
        if not command:
            return None
        async with self._check_lock:
            tip = self.git.shared.tip
            if tip not in self._tip_checks:
                self._tip_checks[tip] = await self._check_tip(command)
                self._warn_if_it_ran_nothing(command, *self._tip_checks[tip])
            return self._tip_checks[tip]

    def _warn_if_it_ran_nothing(self, command: str, exit_code: int | None, output: str) -> None:
        """Say once when the check could not run its tests on the shared branch (a program missing in the
        worktree: exit 126/127; pytest finding no tests or refusing its arguments: 4/5): every tree then fails
        alike, and the gate can only keep out what no longer parses."""
        ran_nothing = {126, 127} | ({4, 5} if "pytest" in command else set())
        if self._said_check_ran_nothing or exit_code not in ran_nothing:
            return
        self._said_check_ran_nothing = True
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
        self.record.status(
            f"the check `{command}` ran no test on the shared branch (exit {exit_code}: {last[:160]}); every tree"
            " fails alike, so the gate only keeps out files that no longer parse"
        )

    def checked(self, tip: str) -> tuple[int | None, str] | None:
        return self._tip_checks.get(tip)

    async def _check_tip(self, command: str) -> tuple[int | None, str]:
        """Through the gate's per-tree cache when it is the gate's check, so the gate never runs it again."""
        from ..tools.sandbox import run_command

        tip, tip_tree = self.git.shared.tip, self.git.shared.tip_tree
        gate = self.gate if self.check is not None and command == self.check.command and tip_tree else None
        if gate is not None and (cached := gate.cached(tip_tree)) is not None:
            return cached.exit_code, cached.output
        async with self.git.worktree(f"check-{self.cycle_number}", "judge") as wt:
            if gate is not None:
                result, _ = await gate.tip_result(tip_tree, wt, tip)
                return result.exit_code, result.output
            ran = await run_command(
                command, wt.path, self.settings.sandbox, timeout=self.settings.sandbox.max_timeout
            )
            return ran.exit_code, ran.text

    def _fresh_map(self, max_age: float) -> str | None:
        cache = self._map_cache
        if cache is None:
            return None
        tip, text, read_at = cache
        return text if tip == self.git.shared.tip or time.monotonic() - read_at < max_age else None
