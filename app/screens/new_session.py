"""The form that starts a session: repository, goal, workers, an optional config file.

Settings are loaded and the engine created in a thread (git and the record are touched); any refusal comes
back as one line under the form, and the form stays open to fix it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, TextArea

from .workers import MAX_WORKERS

EngineFactory = Callable[[Any, Path, str, Path], Any]
"""``(settings, repo, goal, db_path) -> Engine``; raises ConfigError, WorkspaceError or ValueError."""


def one_line(exc: BaseException) -> str:
    """An exception as one line: our errors already are; others get their type in front."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    known = type(exc).__name__ in ("ConfigError", "WorkspaceError", "ValueError", "ValidationError")
    return text if known and text else f"{type(exc).__name__}: {text}".rstrip(": ")


def create_engine(
    factory: EngineFactory, db_path: Path, repo: str, goal: str, workers: int, config: str
) -> Any:
    """Validate the form's values and build the engine (blocking: runs off the UI thread)."""
    from ..config import load_settings

    repo_path = Path(repo).expanduser().resolve()
    config_path = Path(config).expanduser() if config else None
    settings = load_settings(repo_path, config_path)
    settings.limits.workers = workers
    return factory(settings, repo_path, goal, db_path)


class NewSessionScreen(ModalScreen[Any]):
    """Dismissed with the created engine, or None when cancelled."""

    CSS_PATH = "new_session.tcss"
    BINDINGS = [
        Binding("ctrl+s", "start", "start", priority=True),
        Binding("escape", "cancel", "cancel"),
    ]

    class Created(Message):
        def __init__(self, engine: Any) -> None:
            super().__init__()
            self.engine = engine

    class Failed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(self, db_path: Path, factory: EngineFactory, repo: str | None = None) -> None:
        super().__init__()
        self.db_path, self.factory = db_path, factory
        self.repo = repo if repo is not None else str(Path.cwd())

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("New session", id="title")
            yield Label("Repository", classes="field")
            yield Input(self.repo, placeholder="path of a git repository", id="repo", compact=True)
            yield Label("Goal", classes="field")
            yield TextArea(id="goal", soft_wrap=True, tab_behavior="focus", compact=True)
            with Horizontal(id="row"):
                with Vertical(id="workers-box"):
                    yield Label("Workers", classes="field")
                    yield Input("4", type="integer", id="workers", compact=True)
                with Vertical(id="config-box"):
                    yield Label("Config file (optional)", classes="field")
                    yield Input(placeholder="formicary.toml", id="config", compact=True)
            yield Label("", id="error")
            with Horizontal(id="buttons"):
                yield Button("Start (ctrl+s)", variant="primary", id="start", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#goal", TextArea).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_start()

    def _error(self, text: str, busy: bool = False) -> None:
        label = self.query_one("#error", Label)
        label.update(text)
        label.set_class(busy, "-busy")

    def action_start(self) -> None:
        repo = self.query_one("#repo", Input).value.strip()
        goal = self.query_one("#goal", TextArea).text.strip()
        workers = self.query_one("#workers", Input).value.strip()
        config = self.query_one("#config", Input).value.strip()
        if not repo:
            self._error("Give the path of the repository to work on.")
        elif not goal:
            self._error("Write the goal: what the agents should achieve.")
        elif not workers.isdigit() or not 1 <= int(workers) <= MAX_WORKERS:
            self._error(f"Workers must be a whole number from 1 to {MAX_WORKERS}.")
        else:
            self._error("Starting…", busy=True)
            self.query_one("#start", Button).disabled = True
            self._create(repo, goal, int(workers), config)

    @work(thread=True, exclusive=True, exit_on_error=False, group="create")
    def _create(self, repo: str, goal: str, workers: int, config: str) -> None:
        try:
            engine = create_engine(self.factory, self.db_path, repo, goal, workers, config)
        except Exception as exc:  # shown under the form; the operator fixes the field and retries
            self.post_message(self.Failed(one_line(exc)))
            return
        self.post_message(self.Created(engine))

    def on_new_session_screen_failed(self, message: Failed) -> None:
        self._error(message.error)
        self.query_one("#start", Button).disabled = False

    async def on_new_session_screen_created(self, message: Created) -> None:
        """Open the repository now, so a workspace problem is shown here rather than after the form closes."""
        prepare = getattr(message.engine, "prepare", None)
        if prepare is not None:
            try:
                await prepare()
            except Exception as exc:  # WorkspaceError and friends: one line under the form
                self.on_new_session_screen_failed(self.Failed(one_line(exc)))
                return
        self.dismiss(message.engine)

    def action_cancel(self) -> None:
        self.dismiss(None)
