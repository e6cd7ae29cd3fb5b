"""The engine: a session's cycles of planners → workers → judge, run as plain asyncio tasks, headless.

It owns the store writer, the model client and the session's git workspace, and offers the small control API
the TUI, an attached TUI (through the store) and headless signals use: pause, resume, fresh start, stop, steer,
set workers. Every control is recorded as an event. Each cycle starts fresh: new planner conversations; only the
repository, the judge's notes and the root planner's scratchpad carry over.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ...store.db import new_id
from ...store.writer import Writer
from .. import paths
from ..status import Control, SessionStatus, TaskStatus
from .state import Handoff, Landed, SessionState, Task

if TYPE_CHECKING:
    from ..git.gate import Gate, GateVerdict
    from ..git.workspace import SessionRepo, Worktree
    from ..settings import Settings
    from ..tools.check import CheckSpec


class PreflightError(Exception):
    """A configured model endpoint does not answer; the message says which and what to do."""


async def preflight(settings: Settings, timeout: float = 5.0) -> None:
    """GET ``/models`` on every configured OpenAI-compatible endpoint, so a typo in a URL fails in seconds."""
    import httpx

    from ..settings import ROLES

    urls = {settings.role(r).base_url: settings.role(r) for r in ROLES}
    async with httpx.AsyncClient(timeout=timeout) as http:
        for url, model in urls.items():
            if not url or model.api != "openai":
                continue
            headers = {}
            if model.api_key_env and os.environ.get(model.api_key_env):
                headers["Authorization"] = f"Bearer {os.environ[model.api_key_env]}"
            # Any answer will do: a refused key or an unknown model ends the session at its first call, with
            # the reason recorded on the session row.
            try:
                await http.get(f"{url}/models", headers=headers)
            except httpx.HTTPError as exc:
                raise PreflightError(
                    f"model endpoint {url} is not reachable ({type(exc).__name__}); start the server or fix "
                    "model.base_url (`formicary doctor` checks every endpoint)"
                ) from None


@dataclass
class Outcome:
    status: SessionStatus  # done | stopped | failed
    reason: str


@dataclass(frozen=True)
class Snapshot:
    """The engine's state at a glance (headless status lines, tests)."""

    session_id: str
    cycle: int
    paused: bool
    workers: int
    running_workers: int
    tasks: dict[TaskStatus, int]
    commits: int
    prompt_tokens: int
    completion_tokens: int
    elapsed: float


class Engine:
    """One session. Build with :meth:`create` (new) or :meth:`for_resume`; then ``await run()``."""

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
        self.workers = settings.limits.workers
        self.scratchpad = ""
        self.verdict_notes = ""
        self.steering: list[str] = []
        self.inboxes: dict[str, Any] = {}
        self.cycle_handoffs: list[Handoff] = []
        self.tasks_created = 0
        self.cycle_number = 0
        self.cycles_judged = 0
        self.cycle_id: str | None = None
        self.git: SessionRepo | None = None
        self.writer: Writer | None = None
        self.state: SessionState = None  # type: ignore[assignment]  # set in run()
        self.client: Any = None
        self._queue: deque[Task] = deque()
        self._running_workers = 0
        self._wake: anyio.Event | None = None
        self._cycle_scope: anyio.CancelScope | None = None
        self._stop_reason: str | None = None
        self._fresh = False
        self._paused = False
        self._deadline = 0.0
        self._map_cache: tuple[str, str, float] | None = None  # tip, map, monotonic time it was read
        self._map_lock = anyio.Lock()
        self._listeners: list[Any] = []
        self.embedded = None
        self.check: CheckSpec | None = None  # the landing gate's check, chosen in prepare()
        self.check_source = "config"  # or "--check" when the CLI set it
        self.gate: Gate | None = None
        self._resume_branch: str | None = None  # the session branch to reopen (resume only)
        self._resume_cycle: tuple | None = None  # (cycle row, pending task rows, planned) set by recovery
        self.landed: list[Landed] = []  # tasks whose work is on the shared branch (planners never redo them)
        self._tip_checks: dict[str, tuple[int | None, str]] = {}
        self._check_lock = anyio.Lock()

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def create(cls, settings: Settings, repo: Path, goal: str, *, db_path: Path | None = None) -> Engine:
        """A new session on ``repo``; the repository itself is checked when it is opened (:meth:`prepare`)."""
        goal = goal.strip()
        if not goal:
            raise ValueError("the goal is empty; say what the agents should achieve")
        repo = Path(repo).expanduser()
        if not repo.exists():
            raise ValueError(f"{repo} does not exist")
        settings.check_keys()
        return cls(settings, repo.resolve(), goal, new_id(), Path(db_path or paths.default_db_path()))

    @classmethod
    def for_resume(
        cls, settings: Settings, session: dict[str, Any], *, db_path: Path | None = None
    ) -> Engine:
        settings.check_keys()
        engine = cls(
            settings,
            Path(session["repo"]),
            session["goal"],
            session["id"],
            Path(db_path or paths.default_db_path()),
            resume=True,
        )
        engine.scratchpad = session.get("scratchpad") or ""
        engine._resume_branch = session["branch"]
        return engine

    async def prepare(self) -> None:
        """Check the endpoints answer, then open the repository and the session branch.

        Raises ``PreflightError`` or ``WorkspaceError`` with a one-line message, before anything is changed.
        """
        if self.git is not None:
            return
        from ..git.workspace import SessionRepo

        await preflight(self.settings)

        branch = self._resume_branch or self.settings.branch or None
        # Worktrees are parked and reused: a fresh one per task writes every file of the repository and
        # removes them again, serialized behind the worktree lock; a reused one rewrites only what changed.
        self.git = await SessionRepo.open(
            self.repo_path, self.session_id, branch=branch, resume=self.resuming, reuse_worktrees=True
        )
        await self._setup_gate()

    async def _setup_gate(self) -> None:
        """The session's check (configured, ``--check``, or detected from the branch's files) and its gate."""
        from ..git.gate import Gate, choose_check

        gate = self.settings.gate
        self.check = await choose_check(
            self.git.root,
            self.git.shared.tip or self.git.base_sha,
            self.settings.check_command,
            self.check_source,
            gate.junit,
        )
        self.gate = Gate(
            self.check,
            self.settings.sandbox,
            parallel=gate.parallel,
            timeout=gate.timeout,
            parse=gate.parse,
            secret_env_names=self.settings.secret_env_names(),
            on_verdict=self._on_gate,
        )

    def _on_gate(self, verdict: GateVerdict, wt: Worktree) -> None:
        """Record and show one gate decision (trivial passes, with nothing merged or parsed, are not rows;
        conflicts are the integration's to record)."""
        if self.state is None or verdict.tree is None or verdict.conflict:
            return
        self.state.record.gate(verdict, wt.agent_id, wt.task_id)

    # -- control API -------------------------------------------------------------------------------

    def subscribe(self, listener: Any) -> None:
        """Call ``listener(event)`` (an :class:`~.events.Event`) on the event loop for every event emitted."""
        self._listeners.append(listener)
        if self.state is not None:
            self.state.record.listeners.append(listener)

    def _control(self, kind: Control, source: str = "api", **data: Any) -> None:
        if self.state is not None:
            self.state.record.control(kind, source, **data)

    def pause(self, source: str = "api") -> None:
        self._paused = True
        if self.client is not None:
            self.client.pause()
        self._control(Control.PAUSE, source)

    def resume(self, source: str = "api") -> None:
        self._paused = False
        if self.client is not None:
            self.client.resume()
        self._control(Control.RESUME, source)
        self._poke()

    def fresh_start(self, source: str = "api") -> None:
        """Abandon the current cycle now (work that landed stays) and begin a new one."""
        self._control(Control.FRESH, source)
        self._fresh = True
        if self._cycle_scope is not None:
            self._cycle_scope.cancel()

    def stop(self, source: str = "api", reason: str = "stopped by the operator") -> None:
        """Stop gracefully: unfinished tasks go back to pending (``formicary resume`` carries on)."""
        self._control(Control.STOP, source)
        self._stop_reason = self._stop_reason or reason
        if self._cycle_scope is not None:
            self._cycle_scope.cancel()
        if self._paused and self.client is not None:
            self.client.resume()

    def steer(self, text: str, replace_goal: bool = False, source: str = "api") -> None:
        text = text.strip()
        if not text:
            return
        self._control(Control.STEER, source, text=text[:2000], replace_goal=replace_goal)
        if replace_goal:
            self.goal = text
            if self.state is not None:
                self.state.record.set_goal(text)
        else:
            self.steering.append(text)

    def set_workers(self, n: int, source: str = "api") -> None:
        self.workers = max(1, int(n))
        self._control(Control.WORKERS, source, n=self.workers)
        self._poke()

    def snapshot(self) -> Snapshot:
        state = self.state
        return Snapshot(
            session_id=self.session_id,
            cycle=self.cycle_number,
            paused=self._paused,
            workers=self.workers,
            running_workers=self._running_workers,
            tasks=state.counts() if state else {},
            commits=state.commits if state else 0,
            prompt_tokens=state.prompt_tokens if state else 0,
            completion_tokens=state.completion_tokens if state else 0,
            elapsed=time.monotonic() - state.started if state else 0.0,
        )

    # -- for planners, workers and the judge -------------------------------------------------------

    def enqueue(self, task: Task) -> None:
        self._queue.append(task)
        self._poke()

    async def deliver(self, handoff: Handoff) -> None:
        """Send a handoff to the planner that made the task (if it still listens)."""
        task = self.state.tasks.get(handoff.task_id)
        inbox = self.inboxes.get(task.parent_id or "") if task else None
        if inbox is not None:
            await inbox.send(handoff)

    def take_steering(self) -> str:
        text, self.steering = "\n".join(self.steering), []
        return text

    def set_scratchpad(self, text: str) -> None:
        self.scratchpad = text
        self.state.record.set_scratchpad(text)

    def task_budget_left(self) -> int:
        return self.settings.limits.tasks_per_cycle - self.tasks_created

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

    def _fresh_map(self, max_age: float) -> str | None:
        cache = self._map_cache
        if cache is None:
            return None
        tip, text, read_at = cache
        return text if tip == self.git.shared.tip or time.monotonic() - read_at < max_age else None

    async def git_diff_stat(self, since: str) -> str:
        from ..git.run import git

        result = await git("diff", "--stat", since, self.git.shared.tip, cwd=self.git.root, check=False)
        return result.out

    async def run_check(self, command: str) -> tuple[int | None, str]:
        """The project's check command, sandboxed, in a worktree of the shared tip (the gate's cached result
        for the tip when it has one)."""
        from ..tools.sandbox import run_command

        tip_tree = self.git.shared.tip_tree
        cached = self.gate.cached(tip_tree) if self.gate and tip_tree else None
        if cached is not None and self.check is not None and command == self.check.command:
            return cached.exit_code, cached.output
        async with self.git.worktree(f"check-{self.cycle_number}", "judge") as wt:
            result = await run_command(
                command, wt.path, self.settings.sandbox, timeout=self.settings.sandbox.max_timeout
            )
        return result.exit_code, result.text

    @property
    def check_command(self) -> str:
        """The session's check: the gate's (configured, ``--check`` or detected), else the config's."""
        if self.check is not None:
            return self.check.command
        return self.settings.check_command

    async def tip_check(self) -> tuple[int | None, str] | None:
        """The project's check on the shared tip, run once per tip (shared by planners and the judge); None when
        the project has no check."""
        command = self.check_command
        if not command:
            return None
        async with self._check_lock:
            tip = self.git.shared.tip
            if tip not in self._tip_checks:
                self._tip_checks[tip] = await self._check_tip(command)
            return self._tip_checks[tip]

    async def _check_tip(self, command: str) -> tuple[int | None, str]:
        """Through the gate's per-tree cache when it is the gate's check, so the gate never runs it again."""
        tip, tip_tree = self.git.shared.tip, self.git.shared.tip_tree
        if self.gate is None or self.check is None or command != self.check.command or not tip_tree:
            return await self.run_check(command)
        result = self.gate.cached(tip_tree)
        if result is None:
            async with self.git.worktree(f"check-{self.cycle_number}", "judge") as wt:
                result, _ = await self.gate.tip_result(tip_tree, wt, tip)
        return result.exit_code, result.output

    def checked(self, tip: str) -> tuple[int | None, str] | None:
        """The check's result on ``tip`` if it was run there (no new run)."""
        return self._tip_checks.get(tip)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- running -----------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Run cycles until the judge says done, a budget runs out, or the operator stops the session."""
        from .loop import run_session

        return await run_session(self)
