"""The operator's terminal: the Textual app and the entry points the CLI calls.

- :func:`browse` opens the sessions browser (and starts new sessions from it);
- :func:`run_live` shows a session whose engine runs in this process, and returns its outcome;
- :func:`attach` follows a session another process runs, sending controls through the store;
- :func:`view` opens one past session read-only.

Every screen reads the store on its own connection; the app only owns the engines it started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.app import App
from textual.binding import Binding

from .widgets import stylesheets


def default_engine_factory(settings: Any, repo: Path, goal: str, db_path: Path) -> Any:
    """``Engine.create`` (imported when a session is started, not before)."""
    from .agents.session.engine import Engine

    return Engine.create(settings, repo, goal, db_path=db_path)


class FormicaryApp(App[Any]):
    """Owns the engines started here; quitting asks each to stop and waits for it."""

    TITLE = "formicary"
    CSS_PATH = [*stylesheets(), "tui.tcss"]
    BINDINGS = [Binding("q", "quit", "quit")]

    def __init__(
        self,
        db_path: Path,
        *,
        session_id: str | None = None,
        engine: Any = None,
        attach: bool = False,
        clock: Callable[[], float] = time.time,
        engine_factory: Callable[..., Any] = default_engine_factory,
        poll_seconds: float | None = None,
        resume_factory: Callable[..., Any] | None = None,
        notify: str = "off",
    ) -> None:
        super().__init__()
        self.db_path = Path(db_path)
        self.first_session = engine.session_id if engine is not None else session_id
        self.first_engine = engine
        self.attach_first = attach
        self.clock = clock
        self.engine_factory = engine_factory
        self.poll_seconds = poll_seconds
        from .resume import default_resume_factory

        self.resume_factory = resume_factory or default_resume_factory
        """Builds the engine that carries on a stopped or crashed session (the ``r`` key)."""
        self.notify_mode = notify
        """``[ui] notify``: off, bell or desktop, when the judge decides or a session ends."""
        self.alerts: list[tuple[str, str]] = []
        self.engines: dict[str, tuple[Any, asyncio.Task[Any]]] = {}
        self.outcomes: dict[str, Any] = {}
        self._stopping = False

    def on_mount(self) -> None:
        if self.first_engine is not None:
            self.start_engine(self.first_engine)
        if self.first_session is None:
            from .screens.browser import BrowserScreen

            self.push_screen(BrowserScreen(self.db_path, clock=self.clock))
        else:
            self.open_session(self.first_session, attach=self.attach_first, root=True)

    # -- sessions and engines ----------------------------------------------------------------------

    def open_session(self, session_id: str, *, attach: bool = False, root: bool = False) -> None:
        """Show a session: live if its engine runs here, attached if asked, else read-only."""
        from .agents.session.controls import StoreControls
        from .screens.session import SessionScreen

        controls: Any = None
        mode = "read-only"
        if session_id in self.engines:
            controls, mode = self.engines[session_id][0], "live"
        elif attach:
            controls, mode = StoreControls(self.db_path, session_id, source="attach"), "attached"
        kwargs = {"poll_seconds": self.poll_seconds} if self.poll_seconds else {}
        screen = SessionScreen(
            self.db_path, session_id, controls, mode, clock=self.clock, can_go_back=not root, **kwargs
        )
        self.push_screen(screen)

    def resume_engine(self, screen: Any, engine: Any) -> None:
        """Run ``engine`` (built to carry on the session ``screen`` shows) and show that session live."""
        if engine.session_id in self.engines and not self.engines[engine.session_id][1].done():
            return
        self.start_engine(engine)
        root = not screen.can_go_back
        if self.screen is screen:
            self.pop_screen()
        self.open_session(engine.session_id, root=root)
        self.notify("Resumed: the session carries on here.")

    def alert(self, title: str, body: str) -> None:
        """The judge decided or a session ended: ring or notify as configured."""
        from .alerts import alert

        if alert(self, self.notify_mode, title, body):
            self.alerts.append((title, body))

    def start_engine(self, engine: Any) -> None:
        """Run ``engine.run()`` as a task on this loop; it outlives the screens showing it."""
        task = asyncio.create_task(self._run_engine(engine), name=f"formicary-engine-{engine.session_id}")
        self.engines[engine.session_id] = (engine, task)

    async def _run_engine(self, engine: Any) -> Any:
        try:
            outcome = await engine.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the engine records its own failure; the operator must see it too
            self.notify(f"The session failed: {exc}", severity="error", timeout=15)
            outcome = None
        self.outcomes[engine.session_id] = outcome
        return outcome

    def running_engines(self) -> list[tuple[Any, asyncio.Task[Any]]]:
        return [(e, t) for e, t in self.engines.values() if not t.done()]

    # -- quitting ----------------------------------------------------------------------------------

    async def action_quit(self) -> None:
        running = self.running_engines()
        if not running:
            self.exit(self._result())
            return
        if self._stopping:
            for _, task in running:
                task.cancel()
            self.exit(self._result())
            return
        self._stopping = True
        for engine, _ in running:
            try:
                engine.stop()
            except Exception as exc:
                self.notify(f"Stop failed: {exc}", severity="error")
        self.notify("Stopping: waiting for the agents to finish their step. Press q again to quit at once.")
        self.run_worker(self._exit_when_stopped([t for _, t in running]), group="quit", exit_on_error=False)

    async def _exit_when_stopped(self, tasks: list[asyncio.Task[Any]]) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        self.exit(self._result())

    def _result(self) -> Any:
        """What :func:`run_live` returns: the outcome of the engine it was given."""
        if self.first_engine is None:
            return None
        return self.outcomes.get(self.first_engine.session_id)


def _notify_mode(settings: Any = None) -> str:
    """``[ui] notify`` from the session's settings, else from the user's config and the environment."""
    if settings is None:
        from .config import ConfigError, load_settings

        try:
            settings = load_settings()
        except ConfigError:
            return "off"
    return settings.ui.notify


def browse(db_path: Path) -> list[str]:
    """``formicary`` with no command: the sessions browser; returns the ids of the sessions run in it."""
    app = FormicaryApp(db_path, notify=_notify_mode())
    app.run()
    return list(app.engines)


def run_live(engine: Any) -> Any:
    """``formicary run``: the main screen over ``engine``, which this app runs; returns its Outcome (or None)."""
    app = FormicaryApp(engine.db_path, engine=engine, notify=_notify_mode(getattr(engine, "settings", None)))
    app.run()
    if app.first_engine is not None and engine.session_id in app.engines:
        task = app.engines[engine.session_id][1]
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result()
    return app.return_value


def attach(db_path: Path, session_id: str) -> None:
    """``formicary attach``: follow a session run by another process; quitting leaves it running."""
    FormicaryApp(db_path, session_id=session_id, attach=True, notify=_notify_mode()).run()


__all__ = ["FormicaryApp", "attach", "browse", "run_live"]
