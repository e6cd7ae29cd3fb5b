"""The sessions in the record: goal, repository, start, duration, cycles, tasks, commits, verdict, outcome."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from ..view import formatting as fmt

COLUMNS = (
    ("status", 10),
    ("goal", 0),
    ("repository", 16),
    ("started", 16),
    ("time", 7),
    ("cyc", 3),
    ("tasks", 7),
    ("commits", 7),
    ("verdict", 8),
    ("why it stopped", 30),
)


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


class SessionsTable(DataTable[Text | str]):
    """Rows keyed by session id, newest first."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.sessions: dict[str, dict[str, Any]] = {}
        self._goal_width = 0
        self._now = 0.0

    def on_mount(self) -> None:
        self._set_columns(self.content_size.width or 160)

    def on_resize(self, event: events.Resize) -> None:
        self._set_columns(self.content_size.width)

    def _set_columns(self, width: int) -> None:
        """The goal takes whatever the other columns leave (they keep their widths)."""
        fixed = sum(w + 2 for _, w in COLUMNS if w) + 2 + 1
        goal = max(20, width - fixed)
        if goal == self._goal_width:
            return
        self._goal_width = goal
        self.clear(columns=True)
        for label, w in COLUMNS:
            self.add_column(label, width=w or goal, key=label)
        self.load(list(self.sessions.values()), self._now)

    @property
    def selected(self) -> dict[str, Any] | None:
        if not self.row_count:
            return None
        row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        return self.sessions.get(row_key.value or "")

    def load(self, rows: list[dict[str, Any]], now: float) -> None:
        """Replace the rows, keeping the cursor on the same session."""
        keep = self.selected
        self.clear()
        self._now = now
        self.sessions = {r["id"]: r for r in rows}
        for r in rows:
            self.add_row(*self._render(r, now, self._goal_width), key=r["id"])
        if keep and keep["id"] in self.sessions:
            self.move_cursor(row=self.get_row_index(keep["id"]), animate=False)

    @staticmethod
    def _render(r: dict[str, Any], now: float, goal_width: int) -> tuple[Text | str, ...]:
        status = r["status"]
        start, end = _ts(r["started_at"]), _ts(r["ended_at"])
        elapsed = ((end or now) - start) if start is not None else None
        started = r["started_at"][:16].replace("T", " ") if r["started_at"] else "-"
        return (
            Text(f"{fmt.icon(status)} {status}", style=fmt.style(status)),
            fmt.clip(r["goal"], goal_width),
            fmt.clip(Path(r["repo"]).name or r["repo"], 16),
            started,
            fmt.duration(elapsed),
            str(r["cycles"]),
            f"{r['tasks_done']}/{r['tasks']}",
            str(r["commits"]),
            Text(r["last_verdict"] or "-", style=fmt.DECISION_STYLE.get(r["last_verdict"] or "", "grey62")),
            fmt.clip(r["stop_reason"] or "", 30),
        )
