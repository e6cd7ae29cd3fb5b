"""The ``r`` key of a read-only session: carry a stopped or crashed session on, live, in this TUI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work

if TYPE_CHECKING:
    from ..view.views import StatusView


class ResumeAction:
    """A mixin of the session screen; the app supplies ``resume_factory`` and runs the engine."""

    mode: str
    status: StatusView
    loaded: bool
    db_path: Path
    session_id: str
    app: Any
    notify: Callable[..., None]
    post_message: Callable[[Any], bool]

    def can_resume(self) -> bool:
        """A session shown read-only (or one that ended here) that the judge has not called done."""
        if not self.loaded or self.status.session_status == "done":
            return False
        if self.mode == "attached" or (self.mode == "live" and not self.status.ended):
            return False
        return all(engine.session_id != self.session_id for engine, _ in self.app.running_engines())

    def action_resume_session(self) -> None:
        if not self.can_resume():
            return
        self.notify("Resuming: checking the endpoints and the repository…")
        self._build_resume()

    @work(thread=True, exclusive=True, exit_on_error=False, group="resume")
    def _build_resume(self) -> None:
        from ..resume import NotResumable, build_resume_engine

        try:
            engine = build_resume_engine(self.db_path, self.session_id, self.app.resume_factory)
        except NotResumable as exc:
            self.app.call_from_thread(self.notify, f"Cannot resume: {exc}", severity="warning", timeout=10)
            return
        self.app.call_from_thread(self._start_resumed, engine)

    async def _start_resumed(self, engine: Any) -> None:
        prepare = getattr(engine, "prepare", None)
        if prepare is not None:
            try:
                await prepare()
            except Exception as exc:  # WorkspaceError, PreflightError: one line, the view stays read-only
                self.notify(
                    f"Cannot resume: {str(exc).strip().splitlines()[0]}", severity="error", timeout=15
                )
                return
        self.app.resume_engine(self, engine)
