"""How many workers run at once, asked for in a modal; dismissed with the new number or None."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.validation import Integer
from textual.widgets import Input, Label

MAX_WORKERS = 4096


class WorkersScreen(ModalScreen[int | None]):
    """Takes effect as workers finish (more start at once; fewer are not interrupted)."""

    CSS_PATH = "workers.tcss"
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, current: int | None) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label("Workers running at once", id="title")
            yield Input(
                str(self.current or ""),
                placeholder=f"1 – {MAX_WORKERS}",
                type="integer",
                validators=[Integer(minimum=1, maximum=MAX_WORKERS)],
                id="count",
            )
            yield Label("enter to apply, esc to cancel", id="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        result = event.validation_result
        if result is not None and not result.is_valid:
            self.query_one("#hint", Label).update(f"A whole number from 1 to {MAX_WORKERS}.")
            return
        self.dismiss(int(event.value))

    def action_cancel(self) -> None:
        self.dismiss(None)
