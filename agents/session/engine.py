"""The engine: one session as a plain async object, headless — how to build it, run it and control it.

It is the session's context (:mod:`.context`) plus construction, :meth:`Engine.run` (the loop in :mod:`.loop`)
and the small control API the TUI, an attached TUI (through the store) and headless signals use: pause,
resume, fresh start, stop, steer, set workers. Every control is recorded as an event. Each cycle starts fresh:
new planner conversations; only the repository, the judge's notes and the root planner's scratchpad carry over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...store.db import new_id, record_problem
from .. import paths
from ..model.preflight import PreflightError, preflight
from ..status import Control, TaskStatus
from .context import SessionContext
from .loop import Outcome, run_session

if TYPE_CHECKING:
    from ..git.gate import GateVerdict
    from ..git.workspace import Worktree
    from ..settings import Settings

__all__ = ["Engine", "Outcome", "PreflightError", "Snapshot", "preflight"]


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


class Engine(SessionContext):
    """One session. Build with :meth:`create` (new) or :meth:`for_resume`; then ``await run()``."""

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
        engine.resume_branch = session["branch"]
        return engine

    async def prepare(self) -> None:
        """Check the endpoints answer, then open the repository and the session branch.

        Raises ``PreflightError`` or ``WorkspaceError`` with a one-line message, before anything is changed.
        """
        if self.git is not None:
            return
        from ..git.workspace import SessionRepo

        await preflight(self.settings)
        await self._check_record_and_check()

        branch = self.resume_branch or self.settings.branch or None
        # Worktrees are parked and reused: a fresh one per task writes every file of the repository and
        # removes them again, serialized behind the worktree lock; a reused one rewrites only what changed.
        # Only formicary changes them, so commits and resets follow what its tools wrote (tools/changes.py).
        self.git = await SessionRepo.open(
            self.repo_path,
            self.session_id,
            branch=branch,
            resume=self.resuming,
            reuse_worktrees=True,
            follow_changes=True,
        )
        await self._setup_gate()

    async def _check_record_and_check(self) -> None:
        """The record opens and a check the operator named can start, before the repository is touched."""
        import anyio

        from ..tools.check import missing_program, program_of, spec_for

        problem = await anyio.to_thread.run_sync(record_problem, self.db_path)
        if problem is not None:
            raise PreflightError(problem)
        spec = spec_for(self.settings.check_command, self.check_source)
        if (
            spec.enabled
            and program_of(spec.command) is not None  # a name to look up on PATH (the project's venv first)
            and (
                program := await missing_program(spec.command, self.settings.sandbox, await self._checkout())
            )
        ):
            raise PreflightError(
                f"the check `{spec.command}` cannot start: {program} is not found in the sandbox "
                f"(check_command / --check: name a command that runs, or none)"
            )

    async def _checkout(self) -> str | None:
        """The top of the operator's checkout (None when ``repo_path`` is not in one: opening it says why)."""
        from ..git.generated import find_project_env
        from ..git.run import git

        top = await git("rev-parse", "--show-toplevel", cwd=self.repo_path, check=False)
        checkout = top.out.strip() if top.rc == 0 else ""
        if checkout:
            await find_project_env(Path(checkout))  # so the probe sees what the check will
        return checkout or None

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
            batch=gate.batch,
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
        self.listeners.append(listener)
        if self.state is not None:
            self.state.record.listeners.append(listener)

    def _control(self, kind: Control, source: str = "api", **data: Any) -> None:
        if self.state is not None:
            self.state.record.control(kind, source, **data)

    def pause(self, source: str = "api") -> None:
        self.board.paused = True
        if self.client is not None:
            self.client.pause()
        self._control(Control.PAUSE, source)

    def resume(self, source: str = "api") -> None:
        self.board.paused = False
        if self.client is not None:
            self.client.resume()
        self._control(Control.RESUME, source)
        self.board.poke()

    def fresh_start(self, source: str = "api") -> None:
        """Abandon the current cycle now (work that landed stays) and begin a new one."""
        self._control(Control.FRESH, source)
        if self.cycle_scope is not None:
            self.cycle_scope.cancel()

    def stop(self, source: str = "api", reason: str = "stopped by the operator") -> None:
        """Stop gracefully: unfinished tasks go back to pending (``formicary resume`` carries on)."""
        self._control(Control.STOP, source)
        self.stop_reason = self.stop_reason or reason
        if self.cycle_scope is not None:
            self.cycle_scope.cancel()
        if self.paused and self.client is not None:
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
        self.board.workers = max(1, int(n))
        self._control(Control.WORKERS, source, n=self.workers)
        self.board.poke()

    def snapshot(self) -> Snapshot:
        state = self.state
        return Snapshot(
            session_id=self.session_id,
            cycle=self.cycle_number,
            paused=self.paused,
            workers=self.workers,
            running_workers=self.board.running,
            tasks=state.counts() if state else {},
            commits=state.commits if state else 0,
            prompt_tokens=state.prompt_tokens if state else 0,
            completion_tokens=state.completion_tokens if state else 0,
            elapsed=time.monotonic() - state.started if state else 0.0,
        )

    # -- running -----------------------------------------------------------------------------------

    async def run(self) -> Outcome:
        """Run cycles until the judge says done, a budget runs out, or the operator stops the session."""
        await self.prepare()
        return await run_session(self, self)
