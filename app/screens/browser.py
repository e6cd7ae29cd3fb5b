"""The sessions browser: every session in the record, opened read-only (or attached, or live); new ones start here."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label

from ..agents.session.controls import pid_alive
from ..store import queries as q
from ..store.db import connect
from ..widgets.sessions_table import SessionsTable

REFRESH_SECONDS = 2.0


class BrowserScreen(Screen[None]):
    """Lists sessions newest first and refreshes while shown."""

    CSS_PATH = "browser.tcss"
    BINDINGS = [
        Binding("n", "new", "new session"),
        Binding("enter", "open", "open", show=False),
        Binding("r", "refresh", "refresh"),
    ]

    class Listed(Message):
        def __init__(self, rows: list[dict[str, Any]]) -> None:
            super().__init__()
            self.rows = rows

    def __init__(self, db_path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.db_path, self.clock = db_path, clock

    def compose(self) -> ComposeResult:
        yield Header(icon="⁂")
        yield Label("Loading sessions…", id="hint")
        yield SessionsTable(id="sessions")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "sessions"
        self.query_one(SessionsTable).focus()
        self.set_interval(REFRESH_SECONDS, self.action_refresh)

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def action_refresh(self) -> None:
        self._list()

    @work(thread=True, exclusive=True, exit_on_error=False, group="sessions")
    def _list(self) -> None:
        if not self.db_path.exists():
            self.post_message(self.Listed([]))
            return
        db = connect(self.db_path, readonly=True, migrate=False)
        try:
            rows = q.list_sessions(db)
        finally:
            db.conn.close()
        self.post_message(self.Listed(rows))

    def on_browser_screen_listed(self, message: Listed) -> None:
        table = self.query_one(SessionsTable)
        table.load(message.rows, self.clock())
        hint = self.query_one("#hint", Label)
        if message.rows:
            hint.update(f"{len(message.rows)} sessions · enter opens one · n starts a new one")
        else:
            hint.update("No sessions yet. Press n to start one.")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        row = self.query_one(SessionsTable).selected
        if row is None:
            return
        app: Any = self.app
        app.open_session(row["id"], attach=row["status"] in ("running", "paused") and pid_alive(row["pid"]))

    def action_new(self) -> None:
        from .new_session import NewSessionScreen

        app: Any = self.app

        def created(engine: Any) -> None:
            if engine is not None:
                app.start_engine(engine)
                app.open_session(engine.session_id)

        self.app.push_screen(NewSessionScreen(self.db_path, app.engine_factory), created)

    def on_worker_state_changed(self, event: Any) -> None:
        if event.worker.group == "sessions" and event.worker.error is not None:
            self.query_one("#hint", Label).update(f"Cannot read the record: {event.worker.error}")
